"""Conversation templates: how a list of chat messages becomes one prompt string.

Follows MLC's conv_template dict (the `conv_template` field of mlc-chat-config.json), and
carries Tandem's own definitions of the common templates, looked up by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from engine.errors import InvalidMessages

SYSTEM_PLACEHOLDER = "{system_message}"
_ROLE_PLACEHOLDERS = {"user": "{user_message}", "assistant": "{assistant_message}", "tool": "{tool_message}"}


@dataclass(frozen=True)
class ConvTemplate:
    """One chat format. The prompt is: the system block, then per message
    roles[role] + role_content_sep + content + sep, then roles["assistant"] + role_empty_sep."""

    name: str
    system_template: str
    system_message: str
    roles: Mapping[str, str]
    seps: tuple[str, ...]
    role_content_sep: str = ""
    role_empty_sep: str = ""
    stop_str: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    system_prefix_token_ids: tuple[int, ...] = ()
    add_role_after_system_message: bool = True
    role_templates: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConvTemplate:
        """Build from MLC's conv_template dict; raises ValueError naming the bad field."""
        roles = data.get("roles")
        seps = data.get("seps")
        if not isinstance(roles, Mapping) or "assistant" not in roles:
            raise ValueError('conv_template needs "roles" with at least "user" and "assistant"')
        if not isinstance(seps, Sequence) or isinstance(seps, str) or not 1 <= len(seps) <= 2:
            raise ValueError('conv_template "seps" must be a list of one or two strings')
        return cls(
            name=str(data.get("name") or "custom"),
            system_template=str(data.get("system_template", SYSTEM_PLACEHOLDER)),
            system_message=str(data.get("system_message", "")),
            roles={str(k): str(v) for k, v in roles.items()},
            seps=tuple(str(s) for s in seps),
            role_content_sep=str(data.get("role_content_sep", "")),
            role_empty_sep=str(data.get("role_empty_sep", "")),
            stop_str=tuple(str(s) for s in data.get("stop_str") or ()),
            stop_token_ids=tuple(int(t) for t in data.get("stop_token_ids") or ()),
            system_prefix_token_ids=tuple(int(t) for t in data.get("system_prefix_token_ids") or ()),
            add_role_after_system_message=bool(data.get("add_role_after_system_message", True)),
            role_templates={str(k): str(v) for k, v in (data.get("role_templates") or {}).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """MLC's conv_template dict, as written into mlc-chat-config.json."""
        data = asdict(self)
        data["roles"] = dict(self.roles)
        data["role_templates"] = dict(self.role_templates)
        for key in ("seps", "stop_str", "stop_token_ids", "system_prefix_token_ids"):
            data[key] = list(data[key])
        data["messages"] = []
        return data

    def with_token_ids(
        self, stop_token_ids: Sequence[int], system_prefix_token_ids: Sequence[int] | None = None
    ) -> ConvTemplate:
        """The same format with the ids of a particular tokenizer's stop and prefix tokens."""
        prefix = self.system_prefix_token_ids if system_prefix_token_ids is None else system_prefix_token_ids
        return replace(self, stop_token_ids=tuple(stop_token_ids), system_prefix_token_ids=tuple(prefix))

    def render(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt text for these OpenAI-style messages, ending where the assistant speaks.

        A leading system message replaces the template's default system message. Token ids in
        `system_prefix_token_ids` go before the encoded text (they are not part of the string)."""
        system_message, turns = self._split_system(messages)
        system_block = self.system_template.replace(SYSTEM_PLACEHOLDER, system_message)
        user_sep = self.seps[0]
        assistant_sep = self.seps[-1]
        parts = [system_block]
        for index, (role, content) in enumerate(turns):
            omit_role = index == 0 and system_block != "" and not self.add_role_after_system_message
            prefix = "" if omit_role else self.roles[role] + self.role_content_sep
            placeholder = _ROLE_PLACEHOLDERS.get(role, "{" + role + "_message}")
            body = self.role_templates.get(role, placeholder).replace(placeholder, content)
            parts.append(prefix + body + (assistant_sep if role == "assistant" else user_sep))
        parts.append(self.roles["assistant"] + self.role_empty_sep)
        return "".join(parts)

    def prompt_token_ids(self, messages: Sequence[Mapping[str, str]], encode: Callable[[str], list[int]]) -> list[int]:
        """The prompt as token ids: the prefix ids, then the rendered text through `encode`."""
        return [*self.system_prefix_token_ids, *encode(self.render(messages))]

    def _split_system(self, messages: Sequence[Mapping[str, str]]) -> tuple[str, list[tuple[str, str]]]:
        system_message = self.system_message
        turns: list[tuple[str, str]] = []
        for position, message in enumerate(messages):
            role = message.get("role")
            content = message.get("content")
            if not isinstance(content, str):
                raise InvalidMessages(f"Message {position} has no text content; give each message a string 'content'.")
            if role == "system":
                if position != 0:
                    raise InvalidMessages(
                        f"Message {position} is a system message; only the first message may be one. "
                        "Merge it into the first message."
                    )
                system_message = content
            elif isinstance(role, str) and role in self.roles:
                turns.append((role, content))
            else:
                allowed = ", ".join(["system", *self.roles])
                raise InvalidMessages(
                    f"Message {position} has role {role!r}, which the {self.name} template does not know; "
                    f"use one of: {allowed}."
                )
        return system_message, turns


def _chatml(name: str, system_message: str, stop_str: tuple[str, ...], stop_ids: tuple[int, ...]) -> ConvTemplate:
    return ConvTemplate(
        name=name,
        system_template=f"<|im_start|>system\n{SYSTEM_PLACEHOLDER}<|im_end|>\n",
        system_message=system_message,
        roles={"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"},
        seps=("<|im_end|>\n",),
        role_content_sep="\n",
        role_empty_sep="\n",
        stop_str=stop_str,
        stop_token_ids=stop_ids,
    )


# The default token ids are those of each format's reference model; the converter replaces
# them with the ids the converted model's own tokenizer gives these tokens.
BUILTIN_TEMPLATES: Mapping[str, ConvTemplate] = {
    "llama-3": ConvTemplate(
        name="llama-3",
        system_template=f"<|start_header_id|>system<|end_header_id|>\n\n{SYSTEM_PLACEHOLDER}<|eot_id|>",
        system_message="You are a helpful assistant.",
        roles={"user": "<|start_header_id|>user", "assistant": "<|start_header_id|>assistant"},
        seps=("<|eot_id|>",),
        role_content_sep="<|end_header_id|>\n\n",
        role_empty_sep="<|end_header_id|>\n\n",
        stop_str=("<|end_of_text|>", "<|eot_id|>"),
        stop_token_ids=(128001, 128009),
        system_prefix_token_ids=(128000,),
    ),
    "chatml": _chatml("chatml", "You are a helpful AI assistant.", ("<|im_end|>",), (2,)),
    "qwen2": _chatml("qwen2", "You are a helpful assistant.", ("<|endoftext|>", "<|im_end|>"), (151643, 151645)),
    "phi-3": ConvTemplate(
        name="phi-3",
        system_template=f"<|system|>\n{SYSTEM_PLACEHOLDER}<|end|>\n",
        system_message="You are a helpful assistant.",
        roles={"user": "<|user|>", "assistant": "<|assistant|>"},
        seps=("<|end|>\n",),
        role_content_sep="\n",
        role_empty_sep="\n",
        stop_str=("<|endoftext|>", "<|end|>"),
        stop_token_ids=(32000, 32007),
        system_prefix_token_ids=(1,),
    ),
    # TinyLlama-1.1B-Chat: Zephyr-style role markers written as plain text, turns end with </s>.
    "tinyllama_v1_0": ConvTemplate(
        name="tinyllama_v1_0",
        system_template=f"<|system|>\n{SYSTEM_PLACEHOLDER}</s>\n",
        system_message="You are a helpful assistant.",
        roles={"user": "<|user|>", "assistant": "<|assistant|>"},
        seps=("</s>\n",),
        role_content_sep="\n",
        role_empty_sep="\n",
        stop_str=("</s>",),
        stop_token_ids=(2,),
        system_prefix_token_ids=(1,),
    ),
}


def builtin_template(name: str) -> ConvTemplate:
    """A built-in template by name; raises KeyError listing the known names."""
    try:
        return BUILTIN_TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown conversation template {name!r}; known: {', '.join(BUILTIN_TEMPLATES)}") from None


def template_from_config(value: Any) -> ConvTemplate:
    """conv_template as mlc-chat-config.json holds it: a full dict, or (older configs) a name."""
    if isinstance(value, str):
        return builtin_template(value)
    if isinstance(value, Mapping):
        return ConvTemplate.from_dict(value)
    raise ValueError("conv_template must be a template dict or a template name")
