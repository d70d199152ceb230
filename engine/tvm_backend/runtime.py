"""TVMEngine: the Engine protocol on Tandem's own TVM runtime.

Opening a model reads its MLC directory (or the GGUF file a "gguf" directory runs), compiles
(or loads from the cache) the library for the host, puts the weights on the device (repacked
once, then from the weight cache), and keeps one paged-KV session. generate() templates the messages, prefills in chunks, then
samples token by token in numpy with raw-logit logprobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from app.paths import cache_dir
from engine import sampling
from engine.api import (
    Alternative,
    EngineEvent,
    EngineInfo,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    Message,
    Timings,
    TokenEvent,
    Usage,
)
from engine.artifact import find_tensor_cache
from engine.config import GGUF_QUANTIZATION, ChatConfig, read_chat_config
from engine.errors import ContextWindowExceeded, EngineError
from engine.info_extras import info_extras
from engine.models.llama import WeightKinds, weight_kind
from engine.stopping import StopChecker
from engine.tokenizer import Tokenizer
from engine.tvm_backend.compiler import CompiledModel, compiled_model, discard
from engine.tvm_backend.gguf_weights import GGUFWeights, open_gguf_weights
from engine.tvm_backend.session import ModelSession, tvm_errors
from engine.tvm_backend.target import HostTarget, host_target
from engine.tvm_backend.weight_cache import load_weights

ProgressCallback = Callable[[str, float], None]

MAX_CPU_CONTEXT = 8192
"""KV-cache positions allocated on CPU at most: a 128k window would not fit in memory."""


class TVMEngine:
    """A local model on apache-tvm. One generate() runs at a time; others wait for it."""

    def __init__(
        self, model_dir: Path | str, on_progress: ProgressCallback | None = None, device: str | None = None
    ) -> None:
        """device: auto, cpu, cuda, metal or vulkan (default: $TANDEM_DEVICE, else auto)."""
        report = on_progress or (lambda stage, fraction: None)
        self.model_dir = Path(model_dir)
        self.chat_config: ChatConfig = read_chat_config(self.model_dir)
        self.tokenizer = Tokenizer.from_model_dir(self.model_dir)
        self.context_window = min(self.chat_config.context_window_size, MAX_CPU_CONTEXT)
        self._gguf: GGUFWeights | None = None
        if self.chat_config.quantization == GGUF_QUANTIZATION:
            self._gguf = open_gguf_weights(self.model_dir, self.chat_config)  # before compiling: its kinds
        else:
            find_tensor_cache(self.model_dir)  # no weights at all: say so before compiling
        target = host_target(device, self.chat_config.tandem.get("cpu_matmul"))
        self.weights_cache_hit = False
        """Whether the repacked weights came from the weight cache (weight_cache) this time."""
        self.weight_cache_note: str | None = None
        """Why the weights could not be cached (e.g. a read-only cache folder), else None."""
        self.session: ModelSession | None
        self.session, self.compile_s = self._start_session(target, report)
        template = self.chat_config.conv_template
        self._stop_ids = (*template.stop_token_ids, *self.chat_config.eos_token_ids)
        self._lock = threading.Lock()
        self._info = EngineInfo(
            backend="tvm",
            model_id=self.model_dir.name,
            context_window=self.context_window,
            device=target.label,
            quantization=self.chat_config.quantization,
            extra=info_extras(self.chat_config.tandem),
        )
        report("ready", 1.0)

    def _start_session(self, target: HostTarget, report: ProgressCallback) -> tuple[ModelSession, float]:
        """The compiled library (cached or built now) with the weights on the device (cached or
        repacked now); a cached library that will not load is rebuilt once."""
        model = self.chat_config.model_config
        gguf = self._gguf
        kind: WeightKinds = gguf.kinds if gguf is not None else weight_kind(self.chat_config.quantization)
        compile_progress = _scaled(report, 0.0, 0.85)
        compiled = compiled_model(model, kind, target, cache_dir(), compile_progress)
        report("loading weights", 0.85)
        with tvm_errors("loading the weights onto the device"):
            weights = load_weights(self.model_dir, self.chat_config, compiled.params, target, cache_dir(), gguf)
        if gguf is not None:  # the device (or the weight cache's mapping) holds them now
            self._gguf = GGUFWeights(gguf.path, {}, gguf.kinds)
        self.weights_cache_hit, self.weight_cache_note = weights.cache_hit, weights.cache_note

        def start(compiled: CompiledModel) -> ModelSession:
            return ModelSession(
                compiled,
                weights.tensors,
                target.device,
                hidden_size=model.hidden_size,
                vocab_rows=model.vocab_size,
                max_tokens=self.context_window,
                prefill_chunk=min(self.chat_config.prefill_chunk_size, self.context_window),
            )

        try:
            return start(compiled), compiled.compile_s
        except EngineError:
            if compiled.compile_s:  # freshly built and still broken: nothing to retry
                raise
        discard(compiled)
        # Built from the same key, the new library takes the same parameters as the weights loaded.
        compiled = compiled_model(model, kind, target, cache_dir(), compile_progress)
        return start(compiled), compiled.compile_s

    @property
    def info(self) -> EngineInfo:
        return self._info

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The templated prompt as token ids (prefix ids first)."""
        return self.chat_config.conv_template.prompt_token_ids(messages, self.tokenizer.encode)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.prompt_ids(messages))

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[EngineEvent]:
        prompt = self.prompt_ids(request.messages)
        if len(prompt) + 1 > self.context_window:
            raise ContextWindowExceeded(len(prompt), self.context_window)
        return self._stream(prompt, request, cancel or threading.Event())

    def close(self) -> None:
        self.session = None

    def _stream(
        self, prompt: list[int], request: GenerationRequest, cancel: threading.Event
    ) -> Iterator[EngineEvent]:
        with self._lock:
            session = self._require_session()
            rng = sampling.make_rng(request.seed)
            params = sampling.SamplingParams(temperature=request.temperature, top_p=request.top_p)
            stops = StopChecker((*self.chat_config.conv_template.stop_str, *request.stop), self._stop_ids)
            detokenizer = self.tokenizer.streamer()
            budget = min(request.max_tokens, self.context_window - len(prompt))
            started = time.perf_counter()
            logits, computed = session.prefill_reusing_cache(prompt)
            prefill_s = time.perf_counter() - started
            ttft_ms = 0.0
            decode_s = 0.0
            decode_steps = 0
            generated = 0
            reason: FinishReason = "length"
            while generated < budget:
                if cancel.is_set():
                    reason = "cancelled"
                    break
                choice = sampling.sample(logits, params, rng)
                token = choice.token_id
                generated += 1
                if stops.is_stop_token(token):
                    reason = "stop"
                    break
                text = stops.push(detokenizer.push(token))
                if generated == budget and not stops.stopped:
                    # The last token: release what the detokenizer and stop filter held back.
                    text += stops.push(detokenizer.finish()) + stops.flush()
                if generated == 1:
                    ttft_ms = (time.perf_counter() - started) * 1000
                if text or not stops.stopped:
                    yield self._token_event(choice, text)
                if stops.stopped:
                    reason = "stop"
                    break
                if generated < budget:
                    step_started = time.perf_counter()
                    logits = session.decode(token)
                    decode_s += time.perf_counter() - step_started
                    decode_steps += 1
            if ttft_ms == 0.0:
                ttft_ms = (time.perf_counter() - started) * 1000
            yield FinishEvent(
                reason=reason,
                usage=Usage(prompt_tokens=len(prompt), completion_tokens=generated),
                timings=Timings(
                    ttft_ms=ttft_ms,
                    prefill_tok_s=computed / prefill_s if prefill_s > 0 else 0.0,
                    decode_tok_s=decode_steps / decode_s if decode_s > 0 else 0.0,
                ),
            )

    def _token_event(self, choice: sampling.SampledToken, text: str) -> TokenEvent:
        return TokenEvent(
            text=text,
            token_id=choice.token_id,
            logprob=choice.logprob,
            top=tuple(
                Alternative(token_id=token_id, text=self.tokenizer.token_text(token_id), logprob=logprob)
                for token_id, logprob in choice.alternatives
            ),
        )

    def _require_session(self) -> ModelSession:
        if self.session is None:
            raise EngineError("This engine was closed; open the model again.")
        return self.session


def _scaled(report: ProgressCallback, low: float, high: float) -> ProgressCallback:
    return lambda stage, fraction: report(stage, low + (high - low) * fraction)
