"""A model's own Jinja chat template (tokenizer_config.json's `chat_template`, or chat_template.jinja),
rendered in a sandbox the way transformers' apply_chat_template renders it, and the choice between
it and MLC's conv_template (used only where a model has no Jinja template)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from engine.errors import EngineError, InvalidMessages, ModelFileError
from engine.templates import ConvTemplate

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
DEFAULT_TEMPLATE_NAME = "default"
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
"""The special tokens transformers hands a template (its special_tokens_map), by name."""


class ChatTemplateError(EngineError):
    """A model's chat template cannot be read or fails to render; names the model and the fix."""


class PromptFormat(Protocol):
    """How chat messages become a prompt: MLC's ConvTemplate or a model's JinjaChatTemplate."""

    # Read-only: the implementations are frozen dataclasses.
    @property
    def stop_str(self) -> tuple[str, ...]: ...

    @property
    def stop_token_ids(self) -> tuple[int, ...]: ...

    def render(self, messages: Sequence[Mapping[str, str]]) -> str: ...

    def prompt_token_ids(
        self, messages: Sequence[Mapping[str, str]], encode: Callable[[str], list[int]]
    ) -> list[int]: ...


@dataclass(frozen=True)
class JinjaChatTemplate:
    """A model's Jinja chat template with the special tokens it may render.

    The rendered text carries the model's own BOS (when the template writes `bos_token`) and its
    default system prompt (when the template writes one for a conversation without a system message)."""

    source: str
    """The Jinja text."""
    model: str
    """The model's name, for errors."""
    origin: str
    """The file the template came from, for errors."""
    special_tokens: Mapping[str, str] = field(default_factory=dict)
    """bos_token, eos_token, unk_token, pad_token as strings; a token the model lacks is absent."""
    stop_token_ids: tuple[int, ...] = ()
    stop_str: tuple[str, ...] = ()

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text for these OpenAI-style messages, ending where the assistant speaks."""
        chat = _checked_messages(messages)
        template = self._compiled()
        try:
            return template.render(
                messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except _TemplateRaised as raised:
            # The template's own raise_exception: it refuses these messages, not a broken template.
            raise InvalidMessages(f"The chat template of {self.model} refuses this conversation: {raised}") from None
        except Exception as error:  # Jinja's errors, and any runtime error in the template's own code
            raise self._error("fails to render", error) from None

    def prompt_token_ids(
        self, messages: Sequence[Mapping[str, str]], encode: Callable[[str], list[int]]
    ) -> list[int]:
        """The rendered prompt through `encode` (special tokens in the text become their ids; no
        BOS is added, as the template writes it when the model wants it)."""
        return encode(self.render(messages))

    def check(self) -> JinjaChatTemplate:
        """Compile now, so a broken template is reported when the model opens; returns self."""
        self._compiled()
        return self

    def _compiled(self) -> Any:
        import jinja2

        try:
            return _compile(self.source)
        except jinja2.TemplateError as error:
            raise self._error("does not compile", error) from None

    def _error(self, what: str, error: Exception) -> ChatTemplateError:
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return ChatTemplateError(
            f"The chat template of {self.model} (from {self.origin}) {what} ({detail}). "
            f"Fix the template there, or remove it so Tandem uses the model's conv_template."
        )


class _TemplateRaised(Exception):
    """raise_exception(message) called by a template."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # transformers' tojson: plain json.dumps (Jinja's own escapes HTML characters), these options exposed.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    """The template compiled in an immutable sandbox with transformers' settings and helpers."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Templates come from downloaded models: the sandbox keeps them from reaching Python internals.
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_generation_tag(), jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment.from_string(source)


@lru_cache(maxsize=1)
def _generation_tag() -> type:
    """`{% generation %}...{% endgeneration %}` (transformers marks assistant spans with it);
    rendering only needs its body."""
    import jinja2.ext
    import jinja2.nodes

    class GenerationTag(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    return GenerationTag


def _checked_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Plain dicts for the template (None values dropped, as transformers does); text content only."""
    chat: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        if not isinstance(message.get("content"), str):
            raise InvalidMessages(f"Message {position} has no text content; give each message a string 'content'.")
        if not isinstance(message.get("role"), str):
            raise InvalidMessages(f"Message {position} has no role; give each message a 'role' such as 'user'.")
        chat.append({key: value for key, value in message.items() if value is not None})
    return chat


def read_chat_template(model_dir: Path | str, model: str | None = None) -> JinjaChatTemplate | None:
    """The model's Jinja template: chat_template.jinja, else tokenizer_config.json's `chat_template`
    (a string, or the list of named templates, of which "default" is taken); None when it has none."""
    folder = Path(model_dir)
    name = model or folder.name
    config_path = folder / TOKENIZER_CONFIG_FILE
    config = _read_tokenizer_config(config_path)
    jinja_path = folder / CHAT_TEMPLATE_FILE
    source: str | None
    if jinja_path.is_file():
        try:
            source, origin = jinja_path.read_text(encoding="utf-8"), str(jinja_path)
        except (OSError, UnicodeDecodeError) as error:
            raise ChatTemplateError(f"{jinja_path} cannot be read ({error}); restore the file or remove it.") from None
    else:
        source, origin = _template_in_config(config, config_path), str(config_path)
        if source is None:
            return None
    tokens = {key: token for key in SPECIAL_TOKEN_KEYS if (token := _token_text(config.get(key))) is not None}
    return JinjaChatTemplate(source=source, model=name, origin=origin, special_tokens=tokens)


def _read_tokenizer_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path} cannot be read ({error}); restore or re-create the file.") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} does not hold a JSON object; restore or re-create the file.")
    return data


def _template_in_config(config: Mapping[str, Any], path: Path) -> str | None:
    value = config.get("chat_template")
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, list):
        named = {
            entry.get("name"): entry.get("template")
            for entry in value
            if isinstance(entry, Mapping) and isinstance(entry.get("template"), str)
        }
        if DEFAULT_TEMPLATE_NAME in named:
            return named[DEFAULT_TEMPLATE_NAME]
        if len(named) == 1:
            return next(iter(named.values()))
        raise ChatTemplateError(
            f"{path}: chat_template lists {', '.join(map(str, named)) or 'no usable templates'} but none named "
            f"{DEFAULT_TEMPLATE_NAME!r}; name the one to chat with \"default\"."
        )
    raise ChatTemplateError(f"{path}: chat_template must be a string or a list of named templates; fix the file.")


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def prompt_format(
    model_dir: Path | str, conv_template: ConvTemplate, eos_token_ids: Sequence[int] = (),
    token_to_id: Callable[[str], int | None] | None = None,
) -> PromptFormat:
    """The model's Jinja template when it has one, else MLC's conv_template. With the Jinja
    template the turn ends on the model's own EOS ids and the template's eos_token (a
    conv_template written beside it may be a generic one whose ids mean nothing here)."""
    template = read_chat_template(model_dir)
    if template is None:
        return conv_template
    stop_ids = list(eos_token_ids)
    eos = template.special_tokens.get("eos_token")
    if eos is not None and token_to_id is not None and (eos_id := token_to_id(eos)) is not None:
        stop_ids.append(eos_id)
    return JinjaChatTemplate(
        source=template.source, model=template.model, origin=template.origin,
        special_tokens=template.special_tokens, stop_token_ids=tuple(dict.fromkeys(stop_ids)),
    ).check()


def template_name(prompt: PromptFormat) -> str:
    """How `prompt` templates, in a few words for EngineInfo: "jinja:<file>" or the conv_template's name."""
    if isinstance(prompt, JinjaChatTemplate):
        return f"jinja:{Path(prompt.origin).name}"
    return str(getattr(prompt, "name", "") or "")
