"""The contract between the engine and the rest of Tandem: requests in, token events out."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:  # numpy stays out of this light contract module
    from engine.sampling import SamplingParams

Message = Mapping[str, str]
"""An OpenAI-style chat message: {"role": "system"|"user"|"assistant", "content": "..."}."""

FinishReason = Literal["stop", "length", "cancelled"]

DEFAULT_MAX_TOKENS = 256
"""Reply tokens a turn may generate unless its caller says otherwise: a full chat answer from a
small model, and a fraction of any supported context window (the prompt keeps the rest)."""

Backend = Literal["auto", "mlc", "tvm"]
"""The backend a caller asks engine.loader.open_engine for: "auto" prefers mlc, then tvm."""
BACKENDS: tuple[Backend, ...] = ("auto", "mlc", "tvm")
EngineBackend = Literal["tvm", "mlc"]
"""The runtime an open engine runs on."""

SETTING_NAMES = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
"""The sampling settings a model gives defaults for, a user may override per model, and a
GenerationRequest carries (each optional, under the same name)."""


def check_setting(name: str, value: object) -> str | None:
    """Why `value` is not a valid `name` setting (a sentence naming the valid range), or None."""
    if name not in SETTING_NAMES:
        return f"{name!r} is not a generation setting (use one of {', '.join(SETTING_NAMES)})"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return f"{name} must be a number, not {value!r}"
    if name == "temperature" and not 0 <= value <= 100:
        return "temperature must be 0 (greedy) or more"
    if name == "top_p" and not 0 < value <= 1:
        return "top_p must be above 0 and at most 1"
    if name == "top_k" and value != int(value):
        return "top_k must be a whole number (0 keeps every token)"
    if name == "min_p" and not 0 <= value < 1:
        return "min_p must be from 0 up to (not including) 1"
    if name == "repetition_penalty" and not 0 < value <= 10:
        return "repetition_penalty must be above 0 (1 means none)"
    return None


@dataclass(frozen=True)
class GenerationRequest:
    """One turn to generate. Each sampling setting left None takes the model's own default
    (generation_config.json, mlc-chat-config.json or the imported Ollama params)."""

    messages: Sequence[Message]
    max_tokens: int = DEFAULT_MAX_TOKENS
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
class HiddenStates:
    """What the model's hidden states say about a turn (float32 vectors of hidden_size): its
    final state (after the last norm) at the prompt's last token, before any answer, and at the
    answer's last computed token; and its residual stream two thirds of the way through the
    model at the prompt's last token and averaged over the answer's computed tokens (empty
    where a backend exports no such state)."""

    prompt_end: Sequence[float]
    answer_end: Sequence[float]
    prompt_middle: Sequence[float] = ()
    answer_middle: Sequence[float] = ()


@dataclass(frozen=True)
class TokenEvent:
    """One generated token: its text delta and its log-probability under the raw logits."""

    text: str
    token_id: int
    logprob: float
    top: tuple[Alternative, ...] = ()
    prompt_hidden: HiddenStates | None = field(default=None, compare=False, repr=False)
    """On an answer's first event, where the backend exports it (Tandem's TVM runtime): the
    states at the prompt's end (HiddenStates' answer fields empty), so that the router can judge
    the question before the answer goes on."""


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
    hidden: HiddenStates | None = field(default=None, compare=False, repr=False)
    """Where the backend exports it (Tandem's TVM runtime; not MLCEngine)."""


EngineEvent = TokenEvent | FinishEvent


@dataclass(frozen=True)
class EngineInfo:
    """An open model and the facts it declares, read once when it opens."""

    backend: EngineBackend
    model_id: str
    context_window: int
    device: str
    quantization: str
    refusal: str | None = None
    """The sentence the model answers with when a request is beyond it (Tandem's own models);
    None when it has none."""
    skills: tuple[str, ...] | None = None
    """The skills the model declares; None when it declares none (its confidence alone decides)."""
    chat_template: str = ""
    """How prompts are templated: "jinja:<file>" for the model's own Jinja template, else the
    name of its MLC conv_template (e.g. "chatml")."""
    generation_defaults: SamplingParams | None = None
    """The model's own sampling settings, which a request's settings replace; None when unknown."""
    weights: str | None = None
    """Which file an imported GGUF is (main tensor type and digest, engine.model_facts); what a
    calibration is keyed on. None for other models."""


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
