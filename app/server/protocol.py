"""The OpenAI wire format `tandem serve` speaks: request bodies validated into engine requests,
engine events shaped into chat-completion bodies and chunks, refusals as OpenAI's error body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import AppError
from engine.api import FinishEvent, GenerationRequest, Message, TokenEvent, check_setting

MAX_REQUEST_BYTES = 8 * 1024 * 1024
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(AppError):
    """A request the server refuses, as OpenAI's JSON error body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatParams:
    request: GenerationRequest
    stream: bool
    include_usage: bool
    top_logprobs: int | None
    """None: no logprobs; 0..20: logprobs with that many alternatives per token."""


def parse_chat(body: bytes) -> ChatParams:
    """Validate an OpenAI chat-completions body; ApiError(400) names the first bad field."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    if data.get("n", 1) != 1:
        raise ApiError(400, "Only n=1 is supported.", param="n")
    logprobs = _field(data, "logprobs", bool, False)
    top = _field(data, "top_logprobs", int, None)
    if top is not None and not (0 <= top <= 20 and logprobs):
        raise ApiError(400, "top_logprobs must be 0-20 and needs logprobs: true.", param="top_logprobs")
    max_tokens = _field(data, "max_completion_tokens", int, None)
    if max_tokens is None:
        max_tokens = _field(data, "max_tokens", int, 256)
    if max_tokens < 1:
        raise ApiError(400, "max_tokens must be at least 1.", param="max_tokens")
    # Sampling settings a client leaves out are the local model's own (None), as vLLM reads a
    # model's generation_config; top_k, min_p and repetition_penalty are vLLM's extra fields.
    temperature = _field(data, "temperature", (int, float), None)
    if temperature is not None and not 0 <= temperature <= 2:
        raise ApiError(400, "temperature must be between 0 and 2.", param="temperature")
    top_p = _field(data, "top_p", (int, float), None)
    if top_p is not None and not 0 < top_p <= 1:
        raise ApiError(400, "top_p must be above 0 and at most 1.", param="top_p")
    extras = {name: _field(data, name, (int, float), None) for name in ("top_k", "min_p", "repetition_penalty")}
    if extras["top_k"] is not None and extras["top_k"] < 0:
        extras["top_k"] = 0  # vLLM's -1: no limit
    for name, value in extras.items():
        problem = None if value is None else check_setting(name, value)
        if problem:
            raise ApiError(400, f"{problem}.", param=name)
    stream_options = _field(data, "stream_options", dict, {})
    return ChatParams(
        request=GenerationRequest(
            messages=_messages(data.get("messages")),
            max_tokens=max_tokens,
            temperature=None if temperature is None else float(temperature),
            top_p=None if top_p is None else float(top_p),
            seed=_field(data, "seed", int, None),
            stop=_stop(data.get("stop")),
            top_k=None if extras["top_k"] is None else int(extras["top_k"]),
            min_p=None if extras["min_p"] is None else float(extras["min_p"]),
            repetition_penalty=None if extras["repetition_penalty"] is None else float(extras["repetition_penalty"]),
        ),
        stream=_field(data, "stream", bool, False),
        include_usage=bool(stream_options.get("include_usage", False)),
        top_logprobs=(top or 0) if logprobs else None,
    )


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ApiError(400, f"{name} has the wrong type.", param=name)
    return value


def _messages(raw: object) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list.", param="messages")
    messages: list[Mapping[str, str]] = []
    for index, message in enumerate(raw):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            raise ApiError(400, f"messages[{index}].role must be system, user or assistant.", param="messages")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: keep the text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise ApiError(400, f"messages[{index}].content may only hold text parts.", param="messages")
            content = "".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{index}].content must be a string.", param="messages")
        messages.append({"role": _ROLES[role], "content": content})
    return messages


def _stop(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and len(raw) <= 4 and all(isinstance(s, str) and s for s in raw):
        return tuple(raw)
    raise ApiError(400, "stop must be a string or a list of up to 4 strings.", param="stop")


def logprob_body(token: TokenEvent, top: int) -> dict[str, Any]:
    return {
        "token": token.text,
        "logprob": token.logprob,
        "bytes": list(token.text.encode()),
        "top_logprobs": [
            {"token": alt.text, "logprob": alt.logprob, "bytes": list(alt.text.encode())} for alt in token.top[:top]
        ],
    }


def finish_reason(finish: FinishEvent) -> str:
    return "length" if finish.reason == "length" else "stop"


def usage_body(finish: FinishEvent) -> dict[str, int]:
    prompt, completion = finish.usage.prompt_tokens, finish.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
