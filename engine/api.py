"""The contract between the engine and the rest of Tandem: requests in, token events out."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Message = Mapping[str, str]
"""An OpenAI-style chat message: {"role": "system"|"user"|"assistant", "content": "..."}."""

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class GenerationRequest:
    """One turn to generate. Each sampling setting left None takes the model's own default
    (generation_config.json, mlc-chat-config.json or the imported Ollama params)."""

    messages: Sequence[Message]
    max_tokens: int = 256
    temperature: float | None = None
    """0 means greedy."""
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None


@dataclass(frozen=True)
class Alternative:
    """One of the most likely tokens at a position, by the raw (unscaled) logits."""

    token_id: int
    text: str
    logprob: float


@dataclass(frozen=True)
class TokenEvent:
    """One generated token: its text delta and its log-probability under the raw logits."""

    text: str
    token_id: int
    logprob: float
    top: tuple[Alternative, ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Timings:
    ttft_ms: float
    prefill_tok_s: float
    decode_tok_s: float


@dataclass(frozen=True)
class FinishEvent:
    reason: FinishReason
    usage: Usage
    timings: Timings


EngineEvent = TokenEvent | FinishEvent


@dataclass(frozen=True)
class EngineInfo:
    backend: str
    """"tvm" or "mlc"."""
    model_id: str
    context_window: int
    device: str
    quantization: str
    extra: Mapping[str, str] = field(default_factory=dict)


class Engine(Protocol):
    """What every local backend provides. Implementations must be safe to drive from one
    worker thread at a time; `cancel` may be set from any thread and is honoured between tokens."""

    @property
    def info(self) -> EngineInfo: ...

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the templated prompt takes, so callers can check the context window."""
        ...

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[EngineEvent]:
        """Yield a TokenEvent per token, then exactly one FinishEvent.

        Raises ContextWindowExceeded before any token when the prompt does not fit."""
        ...

    def close(self) -> None: ...
