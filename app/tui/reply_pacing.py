"""A streamed reply's events on their way from the turn worker to the screen, paced: the worker
queues every event and wakes the screen only when none is pending; the screen takes all that
queued at most FRAMES_PER_S times a second, the tokens in a row joined into one. Rendering a
token at a time held the interpreter lock (and a core) so often that the engine's decode ran at
half its speed in the TUI (bench/tui_stream.py, SmolLM2-135M on 2 cores: 151 tok/s against 316)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offload.events import RouterEvent

FRAMES_PER_S = 10
"""Renders a second at most while a reply streams: smooth to the eye, a small share of a core."""


class PacedEvents:
    """Thread-safe: push() from the worker, take() on the UI thread."""

    def __init__(self, wake: Callable[[], object], frames_per_s: float = FRAMES_PER_S) -> None:
        self._wake = wake
        self._frame_s = 1 / frames_per_s
        self._lock = threading.Lock()
        self._queued: list[RouterEvent] = []
        self._woken = False
        self._last_take = float("-inf")

    def push(self, event: RouterEvent) -> None:
        """Queue an event; wake the screen unless a wake-up is already on its way."""
        with self._lock:
            self._queued.append(event)
            if self._woken:
                return
            self._woken = True
        self._wake()

    def wait_s(self) -> float:
        """How long the screen should wait before take(), to keep to the frame rate: a frame
        after the last take that brought text (the first token shows at once)."""
        return max(0.0, self._last_take + self._frame_s - time.monotonic())

    def take(self) -> list[RouterEvent]:
        """Everything queued, in order, consecutive tokens of one route joined into one."""
        from offload.events import Token

        with self._lock:
            queued, self._queued, self._woken = self._queued, [], False
        if any(isinstance(event, Token) for event in queued):
            self._last_take = time.monotonic()
        return join_tokens(queued)


def join_tokens(events: list[RouterEvent]) -> list[RouterEvent]:
    from offload.events import Token  # the router's package loads after the first paint

    joined: list[RouterEvent] = []
    for event in events:
        last = joined[-1] if joined else None
        if isinstance(event, Token) and isinstance(last, Token) and last.route == event.route:
            joined[-1] = Token(last.text + event.text, event.route, event.logprob)
        else:
            joined.append(event)
    return joined
