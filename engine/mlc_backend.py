"""The mlc backend: MLC LLM's own MLCEngine on the best device, when the mlc_llm package imports.

mlc_llm is not on PyPI and needs its native library, so importing it is guarded; without it this
backend raises BackendUnavailable saying why. A model with its own Jinja chat template is prompted
with it (rendered here, sent as token ids to MLC's completions API); others go through MLC's chat
API and conv_template. Requests carry the model's temperature and top_p unless the request sets
them; MLC's API takes no top_k, min_p or repetition_penalty (it applies mlc-chat-config.json's
repetition_penalty itself). MLC reports logprobs after temperature and top-p, so at a model's own
temperature they are not quite the raw ones the tvm backend reports."""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.api import (
    Alternative,
    EngineEvent,
    EngineInfo,
    FinishEvent,
    GenerationRequest,
    Message,
    Timings,
    TokenEvent,
    Usage,
)
from engine.chat_template import JinjaChatTemplate, prompt_format, template_name
from engine.config import CHAT_CONFIG_FILE, GGUF_QUANTIZATION, read_chat_config, read_generation_defaults
from engine.model_facts import declared_facts
from engine.errors import BackendUnavailable, ContextWindowExceeded, EngineError
from engine.tokenizer import Tokenizer

TOP_ALTERNATIVES = 5


def import_mlc_llm() -> Any:
    """The mlc_llm module, or BackendUnavailable with the reason it cannot be used."""
    try:
        import mlc_llm
    except Exception as error:  # a missing native library raises OSError and others, not ImportError
        raise BackendUnavailable(
            f"The mlc backend is unavailable: importing mlc_llm failed ({type(error).__name__}: {error}). "
            "Tandem runs the model on its own tvm backend instead; to use MLC LLM, install its "
            "wheel from https://llm.mlc.ai (it is not on PyPI)."
        ) from None
    return mlc_llm


class MLCBackendEngine:
    """The Engine protocol over mlc_llm.MLCEngine (OpenAI-style streaming chunks)."""

    def __init__(
        self,
        model_dir: Path | str,
        device: str = "auto",
        on_progress: Callable[[str, float], None] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.chat_config = read_chat_config(self.model_dir)
        facts = declared_facts(self.chat_config.tandem, str(self.model_dir / CHAT_CONFIG_FILE))
        if self.chat_config.quantization == GGUF_QUANTIZATION:
            raise BackendUnavailable(
                f"MLC LLM cannot run {self.model_dir}: it runs a GGUF file, which only Tandem's tvm "
                "backend reads. Use the tvm (or auto) backend for it."
            )
        mlc_llm = import_mlc_llm()
        report = on_progress or (lambda stage, fraction: None)
        self.tokenizer = Tokenizer.from_model_dir(self.model_dir)
        self.prompt_format = prompt_format(
            self.model_dir, self.chat_config.conv_template, self.chat_config.eos_token_ids, self.tokenizer.token_to_id
        )
        self.generation_defaults = read_generation_defaults(self.model_dir)
        report("starting MLC LLM", 0.1)
        try:
            self._engine = mlc_llm.MLCEngine(str(self.model_dir), device=device)
        except Exception as error:
            raise BackendUnavailable(f"MLC LLM could not open {self.model_dir} ({error}).") from error
        self._lock = threading.Lock()
        self._info = EngineInfo(
            backend="mlc",
            model_id=self.model_dir.name,
            context_window=self.chat_config.context_window_size,
            device=device,
            quantization=self.chat_config.quantization,
            refusal=facts.refusal,
            skills=facts.skills,
            weights=facts.weights,
            chat_template=template_name(self.prompt_format),
            generation_defaults=self.generation_defaults,
        )
        report("ready", 1.0)

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
        prompt_tokens = self.count_prompt_tokens(request.messages)
        if prompt_tokens + 1 > self._info.context_window:
            raise ContextWindowExceeded(prompt_tokens, self._info.context_window)
        return self._stream(request, cancel or threading.Event())

    def close(self) -> None:
        self._engine.terminate()

    def _stream(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[EngineEvent]:
        with self._lock:
            started = time.perf_counter()
            first_token_at: float | None = None
            completion = 0
            reason = "length"
            usage: Any = None
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            params = self.generation_defaults.with_request(request)
            common: dict[str, Any] = dict(
                stream=True,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=request.max_tokens,
                stop=list(request.stop) or None,
                seed=request.seed,
                stream_options={"include_usage": True},
            )
            try:
                if isinstance(self.prompt_format, JinjaChatTemplate):
                    # MLC would apply its conv_template to chat messages: send our rendered ids instead.
                    prompt = self.prompt_ids(request.messages)
                    stream = self._engine.completions.create(prompt=prompt, logprobs=TOP_ALTERNATIVES, **common)
                    to_events = self._completion_events
                else:
                    messages = [dict(message) for message in request.messages]
                    stream = self._engine.chat.completions.create(
                        messages=messages, logprobs=True, top_logprobs=TOP_ALTERNATIVES, **common
                    )
                    to_events = self._chat_events
                for chunk in stream:
                    if cancel.is_set():
                        reason = "cancelled"
                        stream.close()
                        break
                    usage = getattr(chunk, "usage", None) or usage
                    for choice in chunk.choices or ():
                        for event in to_events(choice, decoder):
                            completion += 1
                            first_token_at = first_token_at or time.perf_counter()
                            yield event
                        if choice.finish_reason:
                            reason = "stop" if choice.finish_reason == "stop" else "length"
            except EngineError:
                raise
            except Exception as error:
                raise EngineError(f"MLC LLM failed while generating ({type(error).__name__}: {error}).") from error
            yield _finish(reason, usage, completion, started, first_token_at)


    def _chat_events(self, choice: Any, decoder: codecs.IncrementalDecoder) -> Iterator[TokenEvent]:
        for entry in (choice.logprobs.content if choice.logprobs else None) or ():
            yield _token_event(entry, decoder, self.tokenizer)

    def _completion_events(self, choice: Any, decoder: codecs.IncrementalDecoder) -> Iterator[TokenEvent]:
        """The completions API gives token strings and logprobs per token, and the chunk's text
        once: it goes with the chunk's first token."""
        logprobs = choice.logprobs
        if logprobs is None:
            return
        text = choice.text or ""
        for index, (token, logprob) in enumerate(zip(logprobs.tokens, logprobs.token_logprobs)):
            alternatives = (logprobs.top_logprobs[index] if index < len(logprobs.top_logprobs) else None) or {}
            yield TokenEvent(
                text=text if index == 0 else "",
                token_id=_token_id(token, self.tokenizer),
                logprob=float(logprob),
                top=tuple(
                    Alternative(token_id=_token_id(alt, self.tokenizer), text=alt, logprob=float(value))
                    for alt, value in alternatives.items()
                ),
            )


def _token_event(entry: Any, decoder: codecs.IncrementalDecoder, tokenizer: Tokenizer) -> TokenEvent:
    """MLC's `token` keeps printable ASCII only; the bytes carry the real text."""
    raw = bytes(entry.bytes or b"")
    return TokenEvent(
        text=decoder.decode(raw),
        token_id=_token_id(entry.token, tokenizer),
        logprob=float(entry.logprob),
        top=tuple(
            Alternative(
                token_id=_token_id(alt.token, tokenizer),
                text=bytes(alt.bytes or b"").decode("utf-8", errors="backslashreplace"),
                logprob=float(alt.logprob),
            )
            for alt in entry.top_logprobs or ()
        ),
    )


def _token_id(token: str, tokenizer: Tokenizer) -> int:
    found = tokenizer.token_to_id(token)
    return -1 if found is None else found


def _finish(reason: str, usage: Any, completion: int, started: float, first_token_at: float | None) -> FinishEvent:
    extra = (getattr(usage, "extra", None) or {}) if usage is not None else {}
    ttft_s = (first_token_at or time.perf_counter()) - started
    return FinishEvent(
        reason=reason,  # type: ignore[arg-type]
        usage=Usage(
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", completion) or completion),
        ),
        timings=Timings(
            ttft_ms=float(extra.get("ttft_s", ttft_s)) * 1000,
            prefill_tok_s=float(extra.get("prefill_tokens_per_s", 0.0)),
            decode_tok_s=float(extra.get("decode_tokens_per_s", 0.0)),
        ),
    )
