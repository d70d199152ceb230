"""Many requests on one engine: the Scheduler contract (submit with a bounded wait queue, events
to a callback), a one-at-a-time scheduler for any Engine, and `scheduler_for` choosing the TVM
runtime's continuous batching when the engine has it."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from engine.api import Engine, EngineEvent, FinishEvent, GenerationRequest, Timings, Usage
from engine.errors import ContextWindowExceeded, EngineError

EventSink = Callable[[EngineEvent | EngineError], None]
"""Receives a request's events in order, on the scheduler's thread: TokenEvents, then one
FinishEvent, or an EngineError in place of the rest. It must return quickly."""

DEFAULT_MAX_SEQUENCES = 8
"""Sequences decoded together: on a CPU a decode step is bound by reading the weights, so eight
rows cost little more than one."""
DEFAULT_MAX_WAITING = 16


class QueueFull(EngineError):
    """Every slot is busy and the wait queue is full: try again after `retry_after_s`."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        self.waiting = waiting
        self.retry_after_s = retry_after_s
        super().__init__(f"The server is busy ({waiting} requests waiting); retry in {retry_after_s} s.")


class SchedulerClosed(EngineError):
    """The scheduler was closed; the request was not run to the end."""

    def __init__(self) -> None:
        super().__init__("The local model is shutting down; the request was stopped.")


@dataclass(frozen=True)
class SchedulerStats:
    waiting: int
    """Admitted to the queue, not yet running."""
    active: int
    """Running: prefilling or decoding."""
    generated_tokens: int
    """Tokens sampled since the scheduler started."""
    decode_steps: int = 0
    """Batched decode calls since the scheduler started."""
    decoded_rows: int = 0
    """Sequences those calls decoded, summed: over decode_steps, the mean batch size."""
    shared_prompt_tokens: int = 0
    """Prompt tokens forked from a retained prompt's cache instead of prefilled."""


class Scheduler(Protocol):
    max_sequences: int
    max_waiting: int

    def submit(self, request: GenerationRequest, sink: EventSink, cancel: threading.Event) -> int:
        """Queue a request and return its prompt length. Raises ContextWindowExceeded or
        InvalidMessages when it cannot run, QueueFull when the queue is full. Setting `cancel`
        ends the request (a FinishEvent with reason "cancelled") and frees its slot."""
        ...

    closed: threading.Event
    """Set once close() is called."""

    def stats(self) -> SchedulerStats: ...

    def close(self) -> None:
        """Stop: running and waiting requests get SchedulerClosed."""
        ...


def retry_after_s(waiting: int, max_sequences: int) -> int:
    """A hint for a refused client: about one second per full batch ahead of it, at least 1."""
    return max(1, min(30, waiting // max(1, max_sequences)))


def scheduler_for(
    engine: Engine, max_sequences: int = DEFAULT_MAX_SEQUENCES, max_waiting: int = DEFAULT_MAX_WAITING
) -> Scheduler:
    """Continuous batching on Tandem's TVM runtime; one request at a time on other engines."""
    if engine.info.backend == "tvm" and hasattr(engine, "session"):
        from engine.tvm_backend.scheduler import BatchScheduler

        return BatchScheduler(engine, max_sequences=max_sequences, max_waiting=max_waiting)  # type: ignore[arg-type]
    return SerialScheduler(engine, max_waiting=max_waiting)


@dataclass
class _Queued:
    request: GenerationRequest
    sink: EventSink
    cancel: threading.Event
    prompt_tokens: int


class SerialScheduler:
    """Any Engine, one generation at a time on a worker thread (its contract), with the same
    bounded queue and cancellation as the batched scheduler."""

    max_sequences = 1

    def __init__(self, engine: Engine, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        self.engine = engine
        self.max_waiting = max_waiting
        self._queue: deque[_Queued] = deque()
        self._active = 0
        self._generated = 0
        self._closed = False
        self._wake = threading.Condition()
        self.closed = threading.Event()
        self._worker = threading.Thread(target=self._run, name="tandem-serial-scheduler", daemon=True)
        self._worker.start()

    def submit(self, request: GenerationRequest, sink: EventSink, cancel: threading.Event) -> int:
        prompt_tokens = self.engine.count_prompt_tokens(request.messages)
        if prompt_tokens + 1 > self.engine.info.context_window:
            raise ContextWindowExceeded(prompt_tokens, self.engine.info.context_window)
        with self._wake:
            if self._closed:
                raise SchedulerClosed()
            if len(self._queue) + self._active >= self.max_waiting + self.max_sequences:
                raise QueueFull(len(self._queue), retry_after_s(len(self._queue), 1))
            self._queue.append(_Queued(request, sink, cancel, prompt_tokens))
            self._wake.notify()
        return prompt_tokens

    def stats(self) -> SchedulerStats:
        with self._wake:
            # One sequence per decode step: every token after the first took one.
            return SchedulerStats(len(self._queue), self._active, self._generated, self._generated, self._generated)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self.closed.set()
            dropped, self._queue = list(self._queue), deque()
            self._wake.notify_all()
        for queued in dropped:
            _deliver(queued, SchedulerClosed())

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                queued = self._queue.popleft()
                self._active = 1
            try:
                self._generate(queued)
            finally:
                with self._wake:
                    self._active = 0

    def _generate(self, queued: _Queued) -> None:
        if queued.cancel.is_set():  # cancelled while it waited: the engine is not started
            nothing = Timings(ttft_ms=0.0, prefill_tok_s=0.0, decode_tok_s=0.0)
            _deliver(queued, FinishEvent("cancelled", Usage(queued.prompt_tokens, 0), nothing))
            return
        try:
            for event in self.engine.generate(queued.request, queued.cancel):
                if not isinstance(event, FinishEvent):
                    with self._wake:
                        self._generated += 1
                _deliver(queued, event)
        except EngineError as error:
            _deliver(queued, error)


def _deliver(queued: _Queued, item: EngineEvent | EngineError) -> None:
    """A sink that fails has lost its client: cancel, so the engine stops at the next token."""
    try:
        queued.sink(item)
    except Exception:  # noqa: BLE001  (whatever the sink raised, the worker must live on)
        queued.cancel.set()
