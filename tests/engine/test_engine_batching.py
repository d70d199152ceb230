"""Continuous batching on the TVM runtime (engine.tvm_backend.scheduler): batched greedy output
and logprobs equal one-at-a-time runs and the single-sequence engine (on the embedded
tandem-nano, whose replies are short), per-sequence sampling and stop strings; then chunked
prefill beside running decodes, cancellation and the bounded queue (on a tiny random model,
whose sampled replies run to max_tokens)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from engine.api import FinishEvent, GenerationRequest, TokenEvent
from engine.batching import QueueFull, SchedulerClosed, scheduler_for
from engine.errors import ContextWindowExceeded, EngineError

PROMPTS = (
    "How do I start a new conversation?",
    "hello there",
    "What does privacy mode do?",
    "x",
    "Tell me about Tandem.",
    "How do I search my history?",
)
WAIT_S = 120
LOGPROB_TOLERANCE = {"rel": 1e-3, "abs": 2e-3}
"""A batch decodes with the many-row matmul kernels, a lone sequence with the one-row ones: the
same sums in another order, apart by under 1e-5 on tandem-nano, but the float16 KV cache (the
CPU's default) rounds q, k, v and the attention output to halves, where such a difference can
flip a last bit: measured apart by up to 6.6e-4 at a logprob of -3.6 and 4.0e-3 at -13.8."""


@dataclass
class Run:
    """One submitted request's events, as the scheduler's thread delivers them."""

    request: GenerationRequest
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    first_token: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event | None = None
    """When given, the scheduler's thread waits on it after each token: the test holds the
    batch still (between steps) while it acts."""

    def sink(self, item) -> None:
        self.events.append(item)
        if isinstance(item, TokenEvent):
            self.first_token.set()
            if self.gate is not None:
                assert self.gate.wait(WAIT_S)
        if isinstance(item, (FinishEvent, EngineError)):
            self.done.set()

    @property
    def tokens(self) -> list[TokenEvent]:
        return [e for e in self.events if isinstance(e, TokenEvent)]

    @property
    def finish(self) -> FinishEvent:
        assert self.done.wait(WAIT_S), "the request never finished"
        assert isinstance(self.events[-1], FinishEvent), self.events[-1]
        return self.events[-1]


def submit(scheduler, request: GenerationRequest, gate: threading.Event | None = None) -> Run:
    run = Run(request, gate=gate)
    scheduler.submit(request, run.sink, run.cancel)
    return run


def run_together(scheduler, requests) -> list[Run]:
    runs = [submit(scheduler, r) for r in requests]
    for run in runs:
        run.finish  # noqa: B018  (waits)
    return runs


def greedy(prompt: str, max_tokens: int = 24, **extra) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0, **extra)


@pytest.fixture(scope="module")
def nano():
    import assets
    from engine.loader import open_engine

    engine = open_engine(assets.embedded_model_dir(), backend="tvm")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tiny(tiny_mlc_model):
    from engine.loader import open_engine

    engine = open_engine(tiny_mlc_model("q4f32_1", model_type="llama", tie=True), backend="tvm")
    yield engine
    engine.close()


@pytest.fixture
def scheduler(nano):
    opened = scheduler_for(nano, max_sequences=8, max_waiting=16)
    yield opened
    opened.close()


def long_request(scheduler, max_tokens: int) -> GenerationRequest:
    """A sampled request known to run to max_tokens (no stop token on the way): seeded, so
    the same request runs as long again."""
    for seed in range(20):
        request = GenerationRequest(
            [{"role": "user", "content": "Say anything."}], max_tokens=max_tokens, temperature=1.0, top_p=1.0, seed=seed
        )
        if run_together(scheduler, [request])[0].finish.reason == "length":
            return request
    pytest.fail("no seed ran to max_tokens")


def test_batched_greedy_output_and_logprobs_equal_one_at_a_time(nano, scheduler):
    requests = [greedy(p) for p in PROMPTS]
    before = scheduler.stats()
    together = run_together(scheduler, requests)
    after = scheduler.stats()
    assert after.decoded_rows - before.decoded_rows > after.decode_steps - before.decode_steps  # it did batch
    for request, batched in zip(requests, together):
        alone = run_together(scheduler, [request])[0]
        assert [t.token_id for t in batched.tokens] == [t.token_id for t in alone.tokens]
        assert "".join(t.text for t in batched.tokens) == "".join(t.text for t in alone.tokens)
        for b, a in zip(batched.tokens, alone.tokens):
            assert b.logprob == pytest.approx(a.logprob, **LOGPROB_TOLERANCE)
            assert [x.token_id for x in b.top] == [x.token_id for x in a.top]
            assert [x.logprob for x in b.top] == pytest.approx([x.logprob for x in a.top], **LOGPROB_TOLERANCE)
        assert (batched.finish.reason, batched.finish.usage) == (alone.finish.reason, alone.finish.usage)


def test_batched_greedy_output_equals_the_single_sequence_engine(nano, scheduler):
    requests = [greedy(p) for p in PROMPTS]
    for request, batched in zip(requests, run_together(scheduler, requests)):
        reference = [e for e in nano.generate(request) if isinstance(e, TokenEvent)]
        assert [t.token_id for t in batched.tokens] == [t.token_id for t in reference]
        assert [t.logprob for t in batched.tokens] == pytest.approx([t.logprob for t in reference], **LOGPROB_TOLERANCE)


SYSTEM = (
    "You are the helper inside Tandem, a terminal assistant that keeps every conversation on this "
    "machine. Answer in one or two plain sentences, and say so when you do not know."
)


def test_prompts_sharing_a_prefix_fork_it_and_still_match_the_single_sequence_engine(nano, scheduler):
    from engine.tvm_backend.scheduler import MIN_SHARED_TOKENS

    requests = [
        GenerationRequest(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}], max_tokens=16, temperature=0.0
        )
        for p in PROMPTS[:4]
    ]
    before = scheduler.stats().shared_prompt_tokens
    first = run_together(scheduler, requests[:1])  # its prompt stays in the cache
    after_first = scheduler.stats().shared_prompt_tokens
    rest = run_together(scheduler, requests[1:])  # these fork the system prompt's part
    assert after_first == before
    assert scheduler.stats().shared_prompt_tokens - after_first >= 3 * MIN_SHARED_TOKENS
    for request, run in zip(requests, first + rest):
        reference = [e for e in nano.generate(request) if isinstance(e, TokenEvent)]
        assert [t.token_id for t in run.tokens] == [t.token_id for t in reference]
        assert [t.logprob for t in run.tokens] == pytest.approx([t.logprob for t in reference], **LOGPROB_TOLERANCE)
        assert run.finish.usage.prompt_tokens == len(nano.prompt_ids(request.messages))


def test_a_request_that_needs_the_whole_cache_frees_the_retained_prompt(nano):
    from engine.tvm_backend.scheduler import BatchScheduler

    window = nano.context_window
    tight = BatchScheduler(nano, max_sequences=2, max_waiting=4, kv_tokens=window)
    try:
        with_system = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPTS[0]}]
        first = run_together(tight, [GenerationRequest(with_system, max_tokens=4, temperature=0.0)])[0]
        assert first.finish.reason in ("stop", "length")
        # Its prompt stays in the cache; this one reserves every position (prompt + the rest of
        # the window), so it runs only once the retained prompt gives its pages back.
        whole = GenerationRequest([{"role": "user", "content": PROMPTS[1]}], max_tokens=10 * window, temperature=0.0)
        assert run_together(tight, [whole])[0].finish.reason in ("stop", "length")
    finally:
        tight.close()


def test_each_sequence_keeps_its_own_sampling_and_stop_strings(scheduler):
    sampled = GenerationRequest([{"role": "user", "content": PROMPTS[0]}], max_tokens=16, temperature=0.9, seed=11)
    alone = run_together(scheduler, [sampled])[0]
    plain = run_together(scheduler, [greedy(PROMPTS[2])])[0]
    text = "".join(t.text for t in plain.tokens)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), f"the greedy reply is too short to cut: {text!r}"
    stopped_request = greedy(PROMPTS[2], stop=(stop,))
    mixed = run_together(scheduler, [greedy(PROMPTS[1]), sampled, stopped_request, greedy(PROMPTS[3])])
    assert [t.token_id for t in mixed[1].tokens] == [t.token_id for t in alone.tokens]
    stopped_text = "".join(t.text for t in mixed[2].tokens)
    assert stopped_text == text[: text.find(stop)] and mixed[2].finish.reason == "stop"


def test_a_long_prompt_is_prefilled_in_chunks_while_others_keep_decoding(tiny):
    from engine.tvm_backend.scheduler import BatchScheduler

    chunked = BatchScheduler(tiny, max_sequences=4, max_waiting=4, prefill_step_tokens=16)
    try:
        running = submit(chunked, long_request(chunked, 150))
        assert running.first_token.wait(WAIT_S)
        words = " ".join(f"w{i}" for i in range(tiny.context_window))
        messages = [{"role": "user", "content": words}]
        while tiny.count_prompt_tokens(messages) > tiny.context_window // 2:
            messages = [{"role": "user", "content": messages[0]["content"][: len(messages[0]["content"]) * 9 // 10]}]
        assert tiny.count_prompt_tokens(messages) > 4 * 16  # several steps' prefill budget
        long_prompt = GenerationRequest(messages, max_tokens=8, temperature=0.0)
        tokens_before = len(running.tokens)
        late = submit(chunked, long_prompt)
        assert late.first_token.wait(WAIT_S)
        tokens_at_first = len(running.tokens)
        running.cancel.set()
        assert tokens_at_first - tokens_before >= 3, "the running sequence stalled while the long prompt prefilled"
        assert late.finish.reason in ("length", "stop")
        reference = [e.token_id for e in tiny.generate(long_prompt) if isinstance(e, TokenEvent)]
        assert [t.token_id for t in late.tokens] == reference  # chunked prefill computes the same
    finally:
        chunked.close()


def test_cancel_ends_a_sequence_and_frees_its_slot(tiny):
    single = scheduler_for(tiny, max_sequences=1, max_waiting=0)
    try:
        gate = threading.Event()
        running = submit(single, long_request(single, 200), gate)
        assert running.first_token.wait(WAIT_S)  # and the scheduler waits on the gate
        with pytest.raises(QueueFull) as refused:  # the one slot is taken and nothing may wait
            single.submit(greedy(PROMPTS[1]), lambda event: None, threading.Event())
        assert refused.value.retry_after_s >= 1 and "retry" in str(refused.value)
        running.cancel.set()
        gate.set()
        assert running.finish.reason == "cancelled" and running.finish.usage.completion_tokens < 200
        assert single.stats().active == 0
        assert run_together(single, [greedy(PROMPTS[1], 4)])[0].finish.reason in ("stop", "length")
    finally:
        single.close()


def test_a_waiting_request_that_is_cancelled_frees_its_queue_place(tiny):
    single = scheduler_for(tiny, max_sequences=1, max_waiting=1)
    try:
        running = submit(single, long_request(single, 200))
        assert running.first_token.wait(WAIT_S)
        waiting = submit(single, greedy(PROMPTS[1], 4))
        waiting.cancel.set()
        assert waiting.finish.reason == "cancelled" and not waiting.tokens
        assert not running.done.is_set()  # dropped from the queue while the slot stayed busy
        later = submit(single, greedy(PROMPTS[1], 4))  # its place is free again
        running.cancel.set()
        assert later.finish.reason in ("stop", "length")
    finally:
        single.close()


def test_waiting_requests_start_when_a_slot_frees(nano):
    narrow = scheduler_for(nano, max_sequences=2, max_waiting=4)
    try:
        runs = run_together(narrow, [greedy(p, 12) for p in PROMPTS])  # 6 requests, 2 slots, 4 waiting
        assert all(run.finish.reason in ("stop", "length") for run in runs)
        assert narrow.stats().waiting == narrow.stats().active == 0
    finally:
        narrow.close()


def test_a_prompt_over_the_context_window_is_refused_at_submit(nano, scheduler):
    words = [{"role": "user", "content": "word " * (nano.context_window * 2)}]
    with pytest.raises(ContextWindowExceeded, match=str(nano.context_window)):
        scheduler.submit(GenerationRequest(words), lambda event: None, threading.Event())


def test_closing_stops_running_and_waiting_requests_with_a_clear_error(tiny):
    closing = scheduler_for(tiny, max_sequences=1, max_waiting=2)
    gate = threading.Event()
    running = submit(closing, long_request(closing, 200), gate)
    assert running.first_token.wait(WAIT_S)
    waiting = submit(closing, greedy("hi"))
    closer = threading.Thread(target=closing.close)
    closer.start()
    assert closing.closed.wait(WAIT_S)
    gate.set()
    closer.join(WAIT_S)
    for run in (running, waiting):
        assert run.done.wait(WAIT_S) and isinstance(run.events[-1], SchedulerClosed)
    assert "shutting down" in str(running.events[-1])
    with pytest.raises(SchedulerClosed):
        closing.submit(greedy("hi"), lambda event: None, threading.Event())


def test_the_serial_scheduler_queues_one_engine_and_refuses_when_full(nano):
    from engine.batching import SerialScheduler

    serial = SerialScheduler(nano, max_waiting=1)
    try:
        gate = threading.Event()
        running = submit(serial, greedy(PROMPTS[0], 8), gate)
        assert running.first_token.wait(WAIT_S)  # the worker waits on the gate: one running
        waiting = submit(serial, greedy(PROMPTS[1], 8))
        with pytest.raises(QueueFull):
            serial.submit(greedy(PROMPTS[2]), lambda event: None, threading.Event())
        assert (serial.stats().active, serial.stats().waiting) == (1, 1)
        gate.set()
        assert running.finish.reason in ("stop", "length") and waiting.finish.reason in ("stop", "length")
        alone = [e.token_id for e in nano.generate(greedy(PROMPTS[1], 8)) if isinstance(e, TokenEvent)]
        assert [t.token_id for t in waiting.tokens] == alone
    finally:
        serial.close()


def test_forked_sequences_decoded_together_match_the_same_sequences_unforked(nano):
    """A batch whose rows share forked prefix pages attends to them through the paged-prefill
    attention kernel (all sharing rows at once); unforked rows take the decode kernel alone."""
    import numpy as np

    from engine.tvm_backend.batch_session import BatchSession

    batch = BatchSession(nano.session, 4, 1024, 64)
    prefix = list(range(40, 80))
    tails = [[100 + row, 7, 200 + row] for row in range(4)]
    rows = list(range(4))
    for row in rows:
        batch.add(row)
        batch.prefill(row, prefix + tails[row])
    plain = [batch.decode(rows, [5, 6, 7, 8]), batch.decode(rows, [9, 10, 11, 12])]
    for row in rows:
        batch.remove(row)
    batch.add(99)
    batch.prefill(99, prefix)
    forked = [10 + row for row in rows]
    for row in rows:
        batch.fork(99, forked[row], 35)  # mid-page: its part-filled last page is copied
        batch.prefill(forked[row], prefix[35:] + tails[row])
    shared = [batch.decode(forked, [5, 6, 7, 8]), batch.decode(forked, [9, 10, 11, 12])]
    for before, after in zip(plain, shared):
        # Other kernels, other roundings to the float16 cache's halves: measured 2.6e-3 apart.
        np.testing.assert_allclose(after, before, atol=5e-3)
