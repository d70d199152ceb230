"""What `GET /metrics` reports, in Prometheus text format: requests by outcome, queue depth,
active sequences, generated tokens and tokens per second, and time to first token."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.batching import Scheduler

THROUGHPUT_WINDOW_S = 10.0
"""Tokens per second is the count over this trailing window: long enough to smooth the steps,
short enough to show a load that just ended."""
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Throughput:
    """Tokens in the trailing window, as a rate; safe from any thread."""

    def __init__(self, window_s: float = THROUGHPUT_WINDOW_S) -> None:
        self.window_s = window_s
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def add(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._stamps.append(now)
            self._trim(now)

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return len(self._stamps) / self.window_s

    def _trim(self, now: float) -> None:
        while self._stamps and self._stamps[0] < now - self.window_s:
            self._stamps.popleft()


class ServerMetrics:
    """One registry per server, so two servers in one process (tests) keep separate counts."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tandem_requests", "Requests answered, by route and HTTP status.", ["route", "status"], registry=self.registry
        )
        self.generated_tokens = Counter(
            "tandem_generated_tokens", "Tokens streamed or returned to clients.", registry=self.registry
        )
        self.ttft = Histogram(
            "tandem_time_to_first_token_seconds",
            "From the request's arrival to its first token.",
            buckets=TTFT_BUCKETS_S,
            registry=self.registry,
        )
        queue_depth = Gauge("tandem_queue_depth", "Requests waiting for a sequence slot.", registry=self.registry)
        queue_depth.set_function(lambda: scheduler.stats().waiting)
        active = Gauge("tandem_active_sequences", "Sequences being prefilled or decoded.", registry=self.registry)
        active.set_function(lambda: scheduler.stats().active)
        self._throughput = _Throughput()
        tokens_per_s = Gauge(
            "tandem_tokens_per_second",
            f"Generated tokens per second over the last {THROUGHPUT_WINDOW_S:g} s.",
            registry=self.registry,
        )
        tokens_per_s.set_function(self._throughput.rate)
        slots = Gauge("tandem_sequence_slots", "Sequences decoded together at most.", registry=self.registry)
        slots.set(scheduler.max_sequences)

    def token(self) -> None:
        self.generated_tokens.inc()
        self._throughput.add()

    def answered(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
