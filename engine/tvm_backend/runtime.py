"""TVMEngine: the Engine protocol on Tandem's own TVM runtime.

Opening a model reads its MLC directory (or the GGUF file a "gguf" directory runs), compiles
(or loads from the cache) the library for the host, puts the weights on the device (repacked
once, then from the weight cache), and keeps one paged-KV session. When the warm-start index
names both cached parts of an MLC directory, only TVM's runtime is imported (no compiler, no
target detection). generate() templates the messages (the model's own Jinja template, else its
conv_template), prefills in chunks, then samples token by token in numpy with the model's own
sampling settings (or the request's) and raw-logit logprobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine import sampling
from engine.api import (
    Alternative,
    EngineEvent,
    EngineInfo,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    HiddenStates,
    Message,
    Timings,
    TokenEvent,
    Usage,
)
from engine.artifact import find_tensor_cache
from engine.cache_folder import default_cache_dir
from engine.chat_template import PromptFormat, prompt_format, template_name
from engine.config import CHAT_CONFIG_FILE, GGUF_QUANTIZATION, ChatConfig, read_chat_config, read_generation_defaults
from engine.errors import ContextWindowExceeded, EngineError
from engine.model_facts import declared_facts
from engine.gguf.importer import gguf_path_of
from engine.stopping import StopChecker
from engine.tokenizer import Tokenizer
from engine.tvm_backend import warm_start
from engine.tvm_backend.compiler import CompiledModel, compiled_model, discard, read_entry
from engine.tvm_backend.gguf_weights import GGUFWeights, open_gguf_weights
from engine.tvm_backend.session import ModelSession, tvm_errors
from engine.tvm_backend.threads import use_cpu_threads
from engine.tvm_backend.weight_cache import load_weights, read_entry as read_weights_entry

if TYPE_CHECKING:
    from engine.models.llama import WeightKinds
    from engine.tvm_backend.target import HostTarget

ProgressCallback = Callable[[str, float], None]

MAX_KV_CONTEXT = 8192
"""KV-cache positions allocated at most, on every device (CPU and GPU alike): the cache is
allocated up front for the whole window, and a 128k window would not fit in memory."""


class TVMEngine:
    """A local model on apache-tvm. One generate() runs at a time; others wait for it."""

    def __init__(
        self,
        model_dir: Path | str,
        on_progress: ProgressCallback | None = None,
        device: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        """device: auto, cpu, cuda, metal or vulkan (default: $TANDEM_DEVICE, else auto).
        cache_dir: where compiled libraries and repacked weights are kept (default:
        engine.cache_folder.default_cache_dir())."""
        report = on_progress or (lambda stage, fraction: None)
        self.model_dir = Path(model_dir)
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self.chat_config: ChatConfig = read_chat_config(self.model_dir)
        facts = declared_facts(self.chat_config.tandem, str(self.model_dir / CHAT_CONFIG_FILE))
        self.tokenizer = Tokenizer.from_model_dir(self.model_dir)
        self.prompt_format: PromptFormat = prompt_format(
            self.model_dir, self.chat_config.conv_template, self.chat_config.eos_token_ids, self.tokenizer.token_to_id
        )
        self.generation_defaults: sampling.SamplingParams = read_generation_defaults(self.model_dir)
        """The model's own sampling settings; a request's non-None fields replace them."""
        self.context_window = min(self.chat_config.context_window_size, MAX_KV_CONTEXT)
        self._gguf: GGUFWeights | None = None
        # Weight files outside the folder (a GGUF run in place): the warm start watches them too.
        sources: tuple[Path, ...] = ()
        if self.chat_config.quantization == GGUF_QUANTIZATION:
            sources = (gguf_path_of(self.model_dir, {"tandem": self.chat_config.tandem}),)
        else:
            find_tensor_cache(self.model_dir)  # no weights at all: say so before compiling
        self.weights_cache_hit = False
        """Whether the repacked weights came from the weight cache (weight_cache) this time."""
        self.weight_cache_note: str | None = None
        """Why the weights could not be cached (e.g. a read-only cache folder), else None."""
        self.warm_start = False
        """Whether this open took the warm path (cached library and weights, runtime only)."""
        self._library: Path | None = None
        self._weights_entry: tuple[Path, str] | None = None
        """What the full path loaded, for the warm-start index."""
        self.compile_s = 0.0
        self.session: ModelSession | None
        # A GGUF directory's warm start keys on its file too (size, times, inode): an unchanged
        # file is not read again at all.
        use_cpu_threads()  # before TVM's thread pool starts: it reads the count once
        self.session, label = self._start_warm(device, report, sources)
        if self.session is None:
            from engine.tvm_backend.target import host_target  # imports all of TVM

            if sources:  # read (its header and tensor plan) before compiling: it gives the kinds
                self._gguf = open_gguf_weights(self.model_dir, self.chat_config)
            target = host_target(device, self.chat_config.tandem.get("cpu_matmul"))
            self.session, self.compile_s = self._start_session(target, report)
            label = target.label
            self._remember_warm_start(device, target, label, sources)
        self._stop_ids = (*self.prompt_format.stop_token_ids, *self.chat_config.eos_token_ids)
        self._lock = threading.Lock()
        self._info = EngineInfo(
            backend="tvm",
            model_id=self.model_dir.name,
            context_window=self.context_window,
            device=label,
            quantization=self.chat_config.quantization,
            refusal=facts.refusal,
            skills=facts.skills,
            weights=facts.weights,
            chat_template=template_name(self.prompt_format),
            generation_defaults=self.generation_defaults,
        )
        report("ready", 1.0)

    def _start_warm(
        self, device: str | None, report: ProgressCallback, sources: tuple[Path, ...]
    ) -> tuple[ModelSession | None, str]:
        """A session from the library and weights the warm-start index names, with TVM's runtime
        only, and its device label; None (and the record dropped) when there is none or its
        entries will not load."""
        warm = warm_start.find(self.model_dir, device, self.cache_dir, sources)
        if warm is None:
            return None, ""
        report("loading the cached model", 0.5)
        try:
            from engine.tvm_backend import ffi_runtime

            session = None
            compiled = read_entry(warm.library_entry)
            if compiled is not None:
                cpu = ffi_runtime.cpu()
                tensors = read_weights_entry(warm.weights_entry, warm.weights_key, compiled.params, cpu)
                session = None if tensors is None else self._session(compiled, tensors, cpu)
        except Exception:  # noqa: BLE001  (whatever fails here, the full path rebuilds and says why)
            session = None
        if session is None:
            warm_start.forget(self.model_dir, device, self.cache_dir)
            return None, ""
        self.weights_cache_hit = True
        self.warm_start = True
        return session, warm.label

    def _remember_warm_start(
        self, device: str | None, target: HostTarget, label: str, sources: tuple[Path, ...]
    ) -> None:
        """Record a CPU open whose library and weights are both cached, for the next warm start."""
        if target.is_gpu or self._weights_entry is None or self._library is None:
            return
        entry, key = self._weights_entry
        warm = warm_start.WarmStart(self._library.parent, entry, key, label)
        warm_start.remember(self.model_dir, device, self.cache_dir, warm, sources)

    def _session(self, compiled: CompiledModel, tensors: list, device) -> ModelSession:
        model = self.chat_config.model_config
        return ModelSession(
            compiled,
            tensors,
            device,
            hidden_size=model.hidden_size,
            vocab_rows=model.vocab_size,
            max_tokens=self.context_window,
            prefill_chunk=min(self.chat_config.prefill_chunk_size, self.context_window),
        )

    def _start_session(self, target: HostTarget, report: ProgressCallback) -> tuple[ModelSession, float]:
        """The compiled library (cached or built now) with the weights on the device (cached or
        repacked now); a cached library that will not load is rebuilt once."""
        from engine.models.llama import weight_kind

        model = self.chat_config.model_config
        gguf = self._gguf
        kind: WeightKinds = gguf.kinds if gguf is not None else weight_kind(self.chat_config.quantization)
        compile_progress = _scaled(report, 0.0, 0.85)
        compiled = compiled_model(model, kind, target, self.cache_dir, compile_progress)
        report("loading weights", 0.85)
        with tvm_errors("loading the weights onto the device"):
            weights = load_weights(self.model_dir, self.chat_config, compiled.params, target, self.cache_dir, gguf)
        if gguf is not None:  # the device (or the weight cache's mapping) holds them now
            self._gguf = GGUFWeights(gguf.path, {}, gguf.kinds)
        self.weights_cache_hit, self.weight_cache_note = weights.cache_hit, weights.cache_note
        self._weights_entry = (weights.entry, weights.key) if weights.entry and weights.key else None

        def start(compiled: CompiledModel) -> ModelSession:
            session = self._session(compiled, weights.tensors, target.device)
            self._library = compiled.library
            return session

        try:
            return start(compiled), compiled.compile_s
        except EngineError:
            if compiled.compile_s:  # freshly built and still broken: nothing to retry
                raise
        discard(compiled)
        # Built from the same key, the new library takes the same parameters as the weights loaded.
        compiled = compiled_model(model, kind, target, self.cache_dir, compile_progress)
        return start(compiled), compiled.compile_s

    @property
    def info(self) -> EngineInfo:
        return self._info

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The templated prompt as token ids (the model's Jinja template, else its conv_template)."""
        return self.prompt_format.prompt_token_ids(messages, self.tokenizer.encode)

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
            params = self.generation_defaults.with_request(request)
            history = list(prompt)  # what the repetition penalty looks back on
            stops = StopChecker((*self.prompt_format.stop_str, *request.stop), self._stop_ids)
            detokenizer = self.tokenizer.streamer()
            budget = min(request.max_tokens, self.context_window - len(prompt))
            started = time.perf_counter()
            logits, computed = session.prefill_reusing_cache(prompt)
            prefill_s = time.perf_counter() - started
            stats: sampling.BlockStats | None = None  # the prompt's logits come without them
            prompt_states = session.last_states()
            # Sent with the first event, then completed by the answer's states in FinishEvent.
            prompt_hidden = None if prompt_states is None else _prompt_states(prompt_states)
            first_sent = False
            answer_states, middle_sum = prompt_states, None
            ttft_ms = 0.0
            decode_s = 0.0
            decode_steps = 0
            generated = 0
            reason: FinishReason = "length"
            while generated < budget:
                if cancel.is_set():
                    reason = "cancelled"
                    break
                choice = sampling.sample(logits, params, rng, history, stats)
                token = choice.token_id
                history.append(token)
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
                    event = self._token_event(choice, text)
                    if prompt_hidden is not None and not first_sent:
                        event = replace(event, prompt_hidden=prompt_hidden)
                    first_sent = True
                    yield event
                if stops.stopped:
                    reason = "stop"
                    break
                if generated < budget:
                    step_started = time.perf_counter()
                    logits, stats = session.decode_for_sampling(token)
                    decode_s += time.perf_counter() - step_started
                    decode_steps += 1
                    states = session.last_states() if prompt_hidden is not None else None
                    if states is not None:  # read once a token, only from a library that exports them
                        answer_states, middle = states, states[1].astype(np.float64)
                        middle_sum = middle if middle_sum is None else middle_sum + middle
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
                hidden=_finished_states(prompt_hidden, answer_states, middle_sum, decode_steps),
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


def _prompt_states(prompt: np.ndarray) -> HiddenStates:
    """The states at the prompt's end alone ([2, hidden] probe states), for an answer's first event."""
    return HiddenStates(prompt_end=prompt[0].tolist(), answer_end=(), prompt_middle=prompt[1].tolist())


def _finished_states(
    prompt: HiddenStates | None, answer: np.ndarray | None, middle_sum: np.ndarray | None, steps: int
) -> HiddenStates | None:
    """The FinishEvent's states: the prompt's, the answer's last ([2, hidden]) and the mean of the
    middle state over the `steps` decoded tokens; an answer with no computed token reads as its
    prompt's end."""
    if prompt is None or answer is None:
        return None
    middle = prompt.prompt_middle if middle_sum is None else (middle_sum / steps).astype(np.float32).tolist()
    return replace(prompt, answer_end=answer[0].tolist(), answer_middle=middle)
