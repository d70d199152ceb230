"""OpenAI-compatible chat completions: OpenAI, OpenRouter, Together, Groq, vLLM, Ray Serve, Ollama's
/v1, llama.cpp's server, MLC's serve, or another Tandem running `tandem serve`."""

from __future__ import annotations

import json
from collections.abc import Sequence

import httpx
from httpx_sse import ServerSentEvent

from engine.api import Message, Usage
from offload import keys
from offload.errors import MissingKey, RateLimited, ServerError, scrub
from offload.network import Network, is_loopback
from offload.providers.base import RetryPolicy, Timeouts
from offload.providers.streaming import DEFAULT_MAX_RESPONSE_BYTES, HttpChatProvider, json_object


class OpenAICompatible(HttpChatProvider):
    """POST {base_url}/chat/completions with `stream: true`, usage requested in the stream."""

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        *,
        name: str = "openai",
        requires_key: bool | None = None,
        network: Network | None = None,
        timeouts: Timeouts = Timeouts(),
        retry: RetryPolicy = RetryPolicy(),
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        url = httpx.URL(base_url.rstrip("/") + "/chat/completions")
        super().__init__(
            name=name,
            url=url,
            api_key=api_key,
            network=network,
            timeouts=timeouts,
            retry=retry,
            max_response_bytes=max_response_bytes,
        )
        # A server on this machine (a local vLLM, Ollama, another Tandem) usually wants no key.
        self._requires_key = not is_loopback(url.host) if requires_key is None else requires_key

    def _body(self, messages: Sequence[Message], model: str, max_tokens: int, temperature: float) -> str:
        return json.dumps(
            {
                "model": model,
                "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                "max_tokens": max_tokens,
                "temperature": temperature,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            ensure_ascii=False,
        )

    def _check_key(self) -> None:
        if self._requires_key and not self._api_key:
            raise MissingKey(self.name, keys.env_var(self.name))

    def _decoder(self, model: str) -> _ChunkDecoder:
        return _ChunkDecoder(self.name, model, self._api_key)

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return headers


class _ChunkDecoder:
    """`data: {chat.completion.chunk}` events, then `data: [DONE]`."""

    def __init__(self, provider: str, model: str, secret: str | None) -> None:
        self.done = False
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = model
        self._provider = provider
        self._secret = secret

    def decode(self, event: ServerSentEvent) -> list[str]:
        data = event.data.strip()
        if data == "[DONE]":
            self.done = True
            return []
        if not data:
            return []
        chunk = json_object(data)
        if "error" in chunk:
            self._raise_reported(chunk["error"])
        self.model = chunk.get("model") or self.model
        if isinstance(chunk.get("usage"), dict):
            self.usage = _usage(chunk["usage"])
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise ValueError("a chunk whose choices are not a list")
        texts = []
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("delta") or {}, dict):
                raise ValueError("a choice without a delta object")
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                raise ValueError("a delta whose content is not text")
            if content:
                texts.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return texts

    def _raise_reported(self, error: object) -> None:
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        if code in (429, "429", "rate_limit_exceeded"):
            raise RateLimited(self._provider, None)
        raise ServerError(self._provider, None, scrub(str(message), [self._secret]))


def _usage(raw: dict) -> Usage:
    try:
        return Usage(prompt_tokens=int(raw.get("prompt_tokens") or 0), completion_tokens=int(raw.get("completion_tokens") or 0))
    except (TypeError, ValueError):
        raise ValueError("usage figures that are not numbers") from None
