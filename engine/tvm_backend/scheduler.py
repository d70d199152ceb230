"""Continuous batching on Tandem's TVM runtime: requests join the running batch between steps;
each step prefills a bounded number of prompt tokens (so a long prompt does not stall the others)
and decodes one token for every running sequence in a single batched call. Each sequence keeps
its own sampling settings, seed, stop strings and raw-logit logprobs."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engine import sampling
from engine.api import (
    Alternative,
    EngineEvent,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    Timings,
    TokenEvent,
    Usage,
)
from engine.batching import (
    DEFAULT_MAX_SEQUENCES,
    DEFAULT_MAX_WAITING,
    EventSink,
    QueueFull,
    SchedulerClosed,
    SchedulerStats,
    retry_after_s,
)
from engine.errors import ContextWindowExceeded, EngineError
from engine.stopping import StopChecker
from engine.tokenizer import StreamDecoder
from engine.tvm_backend.batch_session import BatchSession
from engine.tvm_backend.runtime import TVMEngine

STEP_PREFILL_TOKENS = 256
"""Prompt tokens prefilled per step at most: a long prompt is cut into chunks of this size, and
the running sequences decode a token between chunks."""
DEFAULT_KV_TOKENS = 16384
"""Cache positions shared by all sequences (pages are taken as sequences grow); a request is
admitted once the positions it may need (prompt plus max_tokens) are free."""


@dataclass
class _Sequence:
    """One request in the batch: where its prompt is, what it sampled, what it has emitted."""

    sequence_id: int
    request: GenerationRequest
    prompt: list[int]
    budget: int
    sink: EventSink
    cancel: threading.Event
    rng: np.random.Generator
    params: sampling.SamplingParams
    stops: StopChecker
    detokenizer: StreamDecoder
    submitted: float
    prefilled: int = 0
    pending: int | None = None
    """The token sampled last, to be fed in the next decode step."""
    generated: int = 0
    ttft_ms: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0
    finished: bool = False
    history: list[int] = field(default_factory=list)
    """The prompt and the tokens sampled so far: what the repetition penalty looks back on."""

    @property
    def reserved(self) -> int:
        return len(self.prompt) + self.budget


@dataclass
class _State:
    waiting: deque[_Sequence] = field(default_factory=deque)
    active: list[_Sequence] = field(default_factory=list)
    reserved: int = 0
    generated: int = 0
    decode_steps: int = 0
    decoded_rows: int = 0
    closed: bool = False


class BatchScheduler:
    """Runs on a worker thread of its own over a BatchSession; submit() from any thread."""

    def __init__(
        self,
        engine: TVMEngine,
        max_sequences: int = DEFAULT_MAX_SEQUENCES,
        max_waiting: int = DEFAULT_MAX_WAITING,
        kv_tokens: int | None = None,
        prefill_step_tokens: int = STEP_PREFILL_TOKENS,
    ) -> None:
        if max_sequences < 1 or max_waiting < 0 or prefill_step_tokens < 1:
            raise EngineError("A scheduler needs a sequence slot, a non-negative queue and a prefill step of 1+ tokens.")
        self.engine = engine
        self.max_sequences = max_sequences
        self.max_waiting = max_waiting
        window = engine.context_window
        self.kv_tokens = kv_tokens or max(window, min(max_sequences * window, DEFAULT_KV_TOKENS))
        if self.kv_tokens < window:
            raise EngineError(f"kv_tokens must hold at least one full context window ({window}).")
        self.prefill_step_tokens = prefill_step_tokens
        chunk = min(prefill_step_tokens, engine.chat_config.prefill_chunk_size, window)
        if engine.session is None:
            raise EngineError("This engine was closed; open the model again.")
        self._batch = BatchSession(engine.session, max_sequences, self.kv_tokens, chunk)
        self._ids = itertools.count()
        self._state = _State()
        self._wake = threading.Condition()
        self.closed = threading.Event()
        """Set once close() is called: no request is admitted after it."""
        self._worker = threading.Thread(target=self._run, name="tandem-batch-scheduler", daemon=True)
        self._worker.start()

    def submit(self, request: GenerationRequest, sink: EventSink, cancel: threading.Event) -> int:
        prompt = self.engine.prompt_ids(request.messages)
        window = self.engine.context_window
        if len(prompt) + 1 > window:
            raise ContextWindowExceeded(len(prompt), window)
        sequence = self._sequence(request, prompt, sink, cancel)
        with self._wake:
            state = self._state
            if state.closed:
                raise SchedulerClosed()
            free_slots = self.max_sequences - len(state.active)  # taken at the next step
            if len(state.waiting) >= self.max_waiting + free_slots:
                raise QueueFull(len(state.waiting), retry_after_s(len(state.waiting), self.max_sequences))
            state.waiting.append(sequence)
            self._wake.notify()
        return len(prompt)

    def stats(self) -> SchedulerStats:
        with self._wake:
            state = self._state
            return SchedulerStats(
                len(state.waiting), len(state.active), state.generated, state.decode_steps, state.decoded_rows
            )

    def close(self) -> None:
        with self._wake:
            self._state.closed = True
            self.closed.set()
            self._wake.notify_all()
        self._worker.join(timeout=30)

    def _sequence(self, request: GenerationRequest, prompt: list[int], sink: EventSink, cancel: threading.Event) -> _Sequence:
        engine = self.engine
        # The same format and settings TVMEngine.generate uses for one request.
        stop_ids = (*engine.prompt_format.stop_token_ids, *engine.chat_config.eos_token_ids)
        return _Sequence(
            sequence_id=next(self._ids),
            request=request,
            prompt=prompt,
            budget=min(request.max_tokens, engine.context_window - len(prompt)),
            sink=sink,
            cancel=cancel,
            rng=sampling.make_rng(request.seed),
            params=engine.generation_defaults.with_request(request),
            stops=StopChecker((*engine.prompt_format.stop_str, *request.stop), stop_ids),
            detokenizer=engine.tokenizer.streamer(),
            submitted=time.perf_counter(),
            history=list(prompt),
        )

    # The worker thread.

    def _run(self) -> None:
        while True:
            with self._wake:
                state = self._state
                while not state.closed and not state.waiting and not state.active:
                    self._wake.wait()
                if state.closed:
                    break
                replies = self._admit()
            for sequence, events in replies:
                self._emit(sequence, events)
            self._step()
        self._shut_down()

    def _admit(self) -> list[tuple[_Sequence, list[EngineEvent | EngineError]]]:
        """Drop waiting requests whose clients left, then move waiting requests into the batch,
        first come first served (caller holds the lock). Returns what to tell whom, sent by the
        caller once the lock is released."""
        state = self._state
        replies: list[tuple[_Sequence, list[EngineEvent | EngineError]]] = []
        for sequence in [s for s in state.waiting if s.cancel.is_set()]:
            state.waiting.remove(sequence)
            replies.append((sequence, [self._finish(sequence, "cancelled")]))
        while state.waiting and len(state.active) < self.max_sequences:
            sequence = state.waiting[0]
            if state.reserved + sequence.reserved > self.kv_tokens:
                break  # wait for pages to free up
            state.waiting.popleft()
            try:
                self._batch.add(sequence.sequence_id)
            except EngineError as error:
                replies.append((sequence, [error]))
                continue
            state.reserved += sequence.reserved
            state.active.append(sequence)
        return replies

    def _step(self) -> None:
        active = list(self._state.active)
        try:
            for sequence in active:
                if sequence.cancel.is_set():
                    self._emit(sequence, [self._finish(sequence, "cancelled")])
            self._prefill_step()
            self._decode_step()
        except EngineError as error:  # the batch's state is unknown: fail everything in it
            for sequence in self._state.active:
                if not sequence.finished:
                    sequence.finished = True
                    self._emit(sequence, [error])
        self._retire()

    def _prefill_step(self) -> None:
        budget = self.prefill_step_tokens
        for sequence in self._state.active:
            while not sequence.finished and sequence.prefilled < len(sequence.prompt) and budget > 0:
                size = min(budget, self._batch.prefill_chunk, len(sequence.prompt) - sequence.prefilled)
                chunk = sequence.prompt[sequence.prefilled : sequence.prefilled + size]
                started = time.perf_counter()
                logits = self._batch.prefill(sequence.sequence_id, chunk)
                sequence.prefill_s += time.perf_counter() - started
                sequence.prefilled += size
                budget -= size
                if sequence.prefilled == len(sequence.prompt):
                    self._emit(sequence, self._take(sequence, logits))
            if budget <= 0:
                break

    def _decode_step(self) -> None:
        ready = [s for s in self._state.active if not s.finished and s.pending is not None]
        if not ready:
            return
        started = time.perf_counter()
        logits = self._batch.decode([s.sequence_id for s in ready], [s.pending for s in ready if s.pending is not None])
        elapsed = time.perf_counter() - started
        with self._wake:
            self._state.decode_steps += 1
            self._state.decoded_rows += len(ready)
        for row, sequence in enumerate(ready):
            sequence.pending = None
            sequence.decode_s += elapsed
            sequence.decode_steps += 1
            if sequence.cancel.is_set():
                self._emit(sequence, [self._finish(sequence, "cancelled")])
            else:
                self._emit(sequence, self._take(sequence, logits[row]))

    def _take(self, sequence: _Sequence, logits: np.ndarray) -> list[EngineEvent]:
        """Sample the next token and turn it into events, as TVMEngine.generate does for one."""
        choice = sampling.sample(logits, sequence.params, sequence.rng, sequence.history)
        token = choice.token_id
        sequence.history.append(token)
        sequence.generated += 1
        with self._wake:
            self._state.generated += 1
        if sequence.generated == 1:
            sequence.ttft_ms = (time.perf_counter() - sequence.submitted) * 1000
        stops = sequence.stops
        if stops.is_stop_token(token):
            return [self._finish(sequence, "stop")]
        text = stops.push(sequence.detokenizer.push(token))
        last = sequence.generated == sequence.budget
        if last and not stops.stopped:  # release what the detokenizer and stop filter held back
            text += stops.push(sequence.detokenizer.finish()) + stops.flush()
        events: list[EngineEvent] = []
        if text or not stops.stopped:
            events.append(self._token_event(choice, text))
        if stops.stopped:
            events.append(self._finish(sequence, "stop"))
        elif last:
            events.append(self._finish(sequence, "length"))
        else:
            sequence.pending = token
        return events

    def _token_event(self, choice: sampling.SampledToken, text: str) -> TokenEvent:
        token_text = self.engine.tokenizer.token_text
        return TokenEvent(
            text=text,
            token_id=choice.token_id,
            logprob=choice.logprob,
            top=tuple(Alternative(i, token_text(i), logprob) for i, logprob in choice.alternatives),
        )

    def _finish(self, sequence: _Sequence, reason: FinishReason) -> FinishEvent:
        sequence.finished = True
        if sequence.ttft_ms == 0.0:
            sequence.ttft_ms = (time.perf_counter() - sequence.submitted) * 1000
        return FinishEvent(
            reason=reason,
            usage=Usage(prompt_tokens=len(sequence.prompt), completion_tokens=sequence.generated),
            timings=Timings(
                ttft_ms=sequence.ttft_ms,
                prefill_tok_s=sequence.prefilled / sequence.prefill_s if sequence.prefill_s > 0 else 0.0,
                decode_tok_s=sequence.decode_steps / sequence.decode_s if sequence.decode_s > 0 else 0.0,
            ),
        )

    def _emit(self, sequence: _Sequence, events: Sequence[EngineEvent | EngineError]) -> None:
        for event in events:
            try:
                sequence.sink(event)
            except Exception:  # noqa: BLE001  (a sink that fails has lost its client: stop the sequence)
                sequence.cancel.set()

    def _retire(self) -> None:
        """Free the slots and cache pages of finished sequences."""
        with self._wake:
            state = self._state
            for sequence in [s for s in state.active if s.finished]:
                state.active.remove(sequence)
                state.reserved -= sequence.reserved
                try:
                    self._batch.remove(sequence.sequence_id)
                except EngineError:
                    pass  # its pages are lost to this batch; the others carry on

    def _shut_down(self) -> None:
        with self._wake:
            state = self._state
            dropped = [*state.active, *state.waiting]
            state.active, state.waiting = [], deque()
        for sequence in dropped:
            try:
                self._batch.remove(sequence.sequence_id)
            except EngineError:
                pass  # shutting down: the cache goes with the scheduler
            self._emit(sequence, [SchedulerClosed()])
