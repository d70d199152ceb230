"""Continuous batching on Tandem's TVM runtime: requests join the running batch between steps;
each step prefills a bounded number of prompt tokens, every newcomer's in one ragged call (so a
long prompt does not stall the others), then decodes in a single batched call one token for every
running sequence and the last prompt token of each newcomer (whose logits give its first token). Each sequence keeps
its own sampling settings, seed, stop strings and raw-logit logprobs. A recent prompt stays in
the cache, and a request whose prompt begins the same way (the system prompt, the chat template)
starts from a fork of it instead of prefilling those tokens again."""

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
MIN_SHARED_TOKENS = 16
"""A prompt prefix shorter than this (a cache page) is prefilled again rather than forked."""
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
    shared: int = 0
    """Prompt tokens forked from the retained prompt rather than prefilled."""
    started: bool = False
    """Whether the sequence is in the cache yet (it is put there when its prefill begins)."""
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
class _Retained:
    """A prompt kept in the cache for the prefix later prompts share with it."""

    sequence_id: int
    tokens: list[int]


@dataclass
class _State:
    waiting: deque[_Sequence] = field(default_factory=deque)
    active: list[_Sequence] = field(default_factory=list)
    retained: _Retained | None = None
    reserved: int = 0
    generated: int = 0
    decode_steps: int = 0
    decoded_rows: int = 0
    shared_prompt_tokens: int = 0
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
        self._held: list[tuple[_Sequence, EngineEvent | EngineError]] | None = None
        """During a step, the finishing events it made, delivered once the step has retired them."""
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
                len(state.waiting),
                len(state.active),
                state.generated,
                state.decode_steps,
                state.decoded_rows,
                state.shared_prompt_tokens,
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
            if state.reserved + sequence.reserved > self.kv_tokens and state.retained is not None:
                self._drop_retained()  # a request in need outranks a prefix kept on speculation
            if state.reserved + sequence.reserved > self.kv_tokens:
                break  # wait for pages to free up
            state.waiting.popleft()
            state.reserved += sequence.reserved
            state.active.append(sequence)
        return replies

    def _start(self, sequence: _Sequence) -> None:
        """Put a sequence in the cache: forked from the retained prompt when they share at least
        MIN_SHARED_TOKENS (leaving one token to prefill, whose logits give the first token)."""
        retained = self._state.retained
        shared = 0
        if retained is not None:
            shared = min(_common_prefix(retained.tokens, sequence.prompt), len(sequence.prompt) - 1)
        if retained is not None and shared >= MIN_SHARED_TOKENS:
            self._batch.fork(retained.sequence_id, sequence.sequence_id, shared)
            sequence.prefilled = sequence.shared = shared
            with self._wake:
                self._state.shared_prompt_tokens += shared
        else:
            self._batch.add(sequence.sequence_id)
        sequence.started = True

    def _retain(self, sequence: _Sequence) -> None:
        """Keep a just-prefilled prompt for later requests, in place of a retained one that it
        did not share a prefix with (the newest way prompts begin wins)."""
        with self._wake:
            state = self._state
            if state.retained is not None and sequence.shared >= MIN_SHARED_TOKENS:
                return
            if state.retained is not None:
                self._drop_retained()
            size = len(sequence.prompt)
            if size <= MIN_SHARED_TOKENS or state.reserved + size > self.kv_tokens:
                return
            retained = _Retained(next(self._ids), list(sequence.prompt))
            try:
                self._batch.fork(sequence.sequence_id, retained.sequence_id, size)
            except EngineError:
                return  # nothing retained: later prompts prefill in full
            state.retained = retained
            state.reserved += size

    def _drop_retained(self) -> None:
        """Free the retained prompt's pages (caller holds the lock)."""
        state = self._state
        retained, state.retained = state.retained, None
        if retained is None:
            return
        state.reserved -= len(retained.tokens)
        try:
            self._batch.remove(retained.sequence_id)
        except EngineError:
            pass  # its pages are lost to this batch; the sequences carry on

    def _step(self) -> None:
        active = list(self._state.active)
        self._held = []
        try:
            for sequence in active:
                if sequence.cancel.is_set():
                    self._emit(sequence, [self._finish(sequence, "cancelled")])
            joining = self._prefill_step()
            self._decode_step(joining)
        except EngineError as error:  # the batch's state is unknown: fail everything in it
            for sequence in self._state.active:
                if not sequence.finished:
                    sequence.finished = True
                    self._emit(sequence, [error])
        self._retire()
        held, self._held = self._held, None
        for sequence, event in held:  # a client told it is done finds its slot already free
            self._deliver(sequence, event)

    def _prefill_step(self) -> list[_Sequence]:
        """Prefill up to the step's token budget of prompt, every newcomer's chunk in one ragged
        call, each prompt but its last token. Returns the sequences whose prompt is now cached
        but for that token: it joins this step's decode, whose logits give their first tokens
        (one batched call for all of them, not one prefill each)."""
        budget = min(self.prefill_step_tokens, self._batch.prefill_chunk)
        ids: list[int] = []
        chunks: list[list[int]] = []
        chunked: list[_Sequence] = []
        for sequence in self._state.active:
            if sequence.finished or budget <= 0:
                continue
            if not sequence.started:
                if self._should_wait_to_fork(sequence):
                    continue
                self._start(sequence)
            size = min(budget, len(sequence.prompt) - 1 - sequence.prefilled)
            if size <= 0:
                continue
            ids.append(sequence.sequence_id)
            chunks.append(sequence.prompt[sequence.prefilled : sequence.prefilled + size])
            chunked.append(sequence)
            budget -= size
        if ids:
            started = time.perf_counter()
            self._batch.prefill_many(ids, chunks)
            elapsed = time.perf_counter() - started
            for sequence, chunk in zip(chunked, chunks):
                sequence.prefill_s += elapsed
                sequence.prefilled += len(chunk)
        return [
            s
            for s in self._state.active
            if s.started and not s.finished and s.pending is None and s.prefilled == len(s.prompt) - 1
        ]

    def _should_wait_to_fork(self, sequence: _Sequence) -> bool:
        """Whether to hold a newcomer back a step: it cannot fork the retained prompt, but a
        prompt still being prefilled shares a prefix with it and will be retained once done
        (a burst of requests with one system prompt prefills it once, not once each)."""
        retained = self._state.retained
        if retained is not None and _common_prefix(retained.tokens, sequence.prompt) >= MIN_SHARED_TOKENS:
            return False
        return any(
            other.started
            and not other.finished
            and other.shared < MIN_SHARED_TOKENS
            and other.prefilled < len(other.prompt)
            and _common_prefix(other.prompt, sequence.prompt) >= MIN_SHARED_TOKENS
            for other in self._state.active
        )

    def _decode_step(self, joining: list[_Sequence]) -> None:
        """One batched call: a token for every running sequence, and the last prompt token of
        every sequence whose prefill just finished."""
        ready = [s for s in self._state.active if not s.finished and s.pending is not None]
        rows = ready + joining
        if not rows:
            return
        tokens = [s.pending for s in ready if s.pending is not None] + [s.prompt[-1] for s in joining]
        started = time.perf_counter()
        logits, stats = self._batch.decode_for_sampling([s.sequence_id for s in rows], tokens)
        elapsed = time.perf_counter() - started
        with self._wake:
            if ready:
                self._state.decode_steps += 1
                self._state.decoded_rows += len(ready)
        for sequence in ready:
            sequence.pending = None
            sequence.decode_s += elapsed
            sequence.decode_steps += 1
        for sequence in joining:
            sequence.prefill_s += elapsed
            sequence.prefilled += 1
            self._retain(sequence)
        live: list[tuple[int, _Sequence]] = []
        for row, sequence in enumerate(rows):
            if sequence.cancel.is_set():
                self._emit(sequence, [self._finish(sequence, "cancelled")])
            else:
                live.append((row, sequence))
        if not live:
            return
        # One call samples every row: the vocabulary-wide work is done without per-row Python.
        chosen = [row for row, _ in live]
        choices = sampling.sample_rows(
            logits[chosen],
            [s.params for _, s in live],
            [s.rng for _, s in live],
            [s.history for _, s in live],
            None if stats is None else stats.rows(chosen),
        )
        for (_, sequence), choice in zip(live, choices):
            self._emit(sequence, self._events(sequence, choice))

    def _events(self, sequence: _Sequence, choice: sampling.SampledToken) -> list[EngineEvent]:
        """The events a sampled token makes: its text (held back while it may start a stop
        string), the finish when it ends the sequence."""
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
                prefill_tok_s=(sequence.prefilled - sequence.shared) / sequence.prefill_s if sequence.prefill_s > 0 else 0.0,
                decode_tok_s=sequence.decode_steps / sequence.decode_s if sequence.decode_s > 0 else 0.0,
            ),
        )

    def _emit(self, sequence: _Sequence, events: Sequence[EngineEvent | EngineError]) -> None:
        """Deliver events; during a step, a sequence's last one waits until its slot is freed."""
        for event in events:
            if self._held is not None and isinstance(event, (FinishEvent, EngineError)):
                self._held.append((sequence, event))
            else:
                self._deliver(sequence, event)

    def _deliver(self, sequence: _Sequence, event: EngineEvent | EngineError) -> None:
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
            self._drop_retained()
            state = self._state
            dropped = [*state.active, *state.waiting]
            state.active, state.waiting = [], deque()
        for sequence in dropped:
            try:
                self._batch.remove(sequence.sequence_id)
            except EngineError:
                pass  # shutting down: the cache goes with the scheduler
            self._emit(sequence, [SchedulerClosed()])


def _common_prefix(first: list[int], second: list[int]) -> int:
    """How many leading tokens the two lists share."""
    size = min(len(first), len(second))
    if first[:size] == second[:size]:
        return size
    return next(i for i in range(size) if first[i] != second[i])
