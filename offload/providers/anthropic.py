"""Anthropic's Messages API, streamed: message_start, content_block_delta..., message_delta, message_stop."""

from __future__ import annotations

import json
from collections.abc import Sequence

import httpx
from httpx_sse import ServerSentEvent

from engine.api import Message, Usage
from offload import keys
from offload.errors import MissingKey, RateLimited, ServerError, scrub
from offload.network import Network
from offload.providers.base import RetryPolicy, Timeouts
from offload.providers.streaming import DEFAULT_MAX_RESPONSE_BYTES, HttpChatProvider, json_object

API_VERSION = "2023-06-01"
_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class Anthropic(HttpChatProvider):
    """POST {base_url}/v1/messages with `stream: true`; system messages travel in `system`."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str = "https://api.anthropic.com",
        *,
        name: str = "anthropic",
        network: Network | None = None,
        timeouts: Timeouts = Timeouts(),
        retry: RetryPolicy = RetryPolicy(),
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(
            name=name,
            url=httpx.URL(base_url.rstrip("/") + "/v1/messages"),
            api_key=api_key,
            network=network,
            timeouts=timeouts,
            retry=retry,
            max_response_bytes=max_response_bytes,
        )

    def _body(self, messages: Sequence[Message], model: str, max_tokens: int, temperature: float) -> str:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body: dict[str, object] = {"model": model, "max_tokens": max_tokens, "temperature": temperature}
        if system:
            body["system"] = system
        body["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        body["stream"] = True
        return json.dumps(body, ensure_ascii=False)

    def _check_key(self) -> None:
        if not self._api_key:
            raise MissingKey(self.name, keys.env_var(self.name))

    def _decoder(self, model: str) -> _MessageDecoder:
        return _MessageDecoder(self.name, model, self._api_key)

    def _headers(self) -> dict[str, str]:
        # Built in a method, never bound to a local of stream_chat: tracebacks that print locals
        # must not show the key.
        return {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "x-api-key": self._api_key or "",
            "anthropic-version": API_VERSION,
        }


class _MessageDecoder:
    def __init__(self, provider: str, model: str, secret: str | None) -> None:
        self.done = False
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = model
        self._provider = provider
        self._secret = secret
        self._input_tokens = 0

    def decode(self, event: ServerSentEvent) -> list[str]:
        kind = event.event
        if kind == "ping" or not event.data.strip():
            return []
        data = json_object(event.data)
        if kind == "content_block_delta":
            delta = data.get("delta")
            if not isinstance(delta, dict):
                raise ValueError("a content_block_delta without a delta object")
            text = delta.get("text")
            return [text] if delta.get("type") == "text_delta" and isinstance(text, str) and text else []
        if kind == "message_start":
            message = data.get("message") or {}
            self.model = message.get("model") or self.model
            self._count(message.get("usage") or {})
        elif kind == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish_reason = _FINISH_REASONS.get(reason, reason)
            self._count(data.get("usage") or {})
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self._raise_reported(data.get("error") or {})
        return []

    def _count(self, usage: dict) -> None:
        try:
            self._input_tokens = int(usage.get("input_tokens") or self._input_tokens)
            output = int(usage.get("output_tokens") or 0)
        except (TypeError, ValueError):
            raise ValueError("usage figures that are not numbers") from None
        self.usage = Usage(prompt_tokens=self._input_tokens, completion_tokens=output)

    def _raise_reported(self, error: dict) -> None:
        if error.get("type") == "rate_limit_error":
            raise RateLimited(self._provider, None)
        raise ServerError(self._provider, None, scrub(str(error.get("message", "")), [self._secret]))
