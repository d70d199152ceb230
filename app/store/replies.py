"""The reply writer: a streaming assistant message, checkpointed to the database as it grows.

The row exists (status partial) from the first moment; text is written back at most every 250 ms,
so a crash loses at most the last 250 ms of the stream, and no token costs a commit of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType

import sqlite_utils

from app.store import conversations, messages
from app.store.database import write_transaction
from app.store.errors import MessageNotFound, ReplyClosed, StoreLocked
from app.store.records import ROUTES, Message, now

CHECKPOINT_INTERVAL_S = 0.25
FINAL_STATUSES = ("complete", "interrupted", "error")

Clock = Callable[[], float]
"""Seconds on a monotonic scale; tests pass a clock they move by hand."""
Access = Callable[[], AbstractContextManager[sqlite_utils.Database]]
"""Lends the store's connection under its lock, with its errors translated."""


class ReplyWriter:
    """Write a reply with append() as it streams, then finish() it once; a with-block that ends
    without finish() records the reply as interrupted (or error, if an exception ended it)."""

    def __init__(self, access: Access, message: Message, clock: Clock = time.monotonic) -> None:
        self._access = access
        self._clock = clock
        self.message_id = message.id
        self.conversation_id = message.conversation_id
        self._parts: list[str] = []
        self._unsaved = False
        self._last_checkpoint = clock()
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def append(self, text: str) -> None:
        if self._finished:
            raise ReplyClosed(self.message_id)
        self._parts.append(text)
        self._unsaved = True
        if self._clock() - self._last_checkpoint >= CHECKPOINT_INTERVAL_S:
            try:
                self.checkpoint()
            except StoreLocked:
                # Another process held the file past the busy timeout: the text is still here,
                # and the next checkpoint (or finish) writes it. The stream must go on.
                self._last_checkpoint = self._clock()

    def discard(self) -> None:
        """Withdraw the text so far (a local draft being replaced by the cloud's reply)."""
        if self._finished:
            raise ReplyClosed(self.message_id)
        self._parts.clear()
        self._unsaved = True
        self.checkpoint()

    def retarget(self, route: str, model: str | None, provider: str | None) -> None:
        """Record at once where the reply now comes from (the cloud took the turn over, or it fell
        back local), so a reply cut off by a crash keeps its true route and provider."""
        if self._finished:
            raise ReplyClosed(self.message_id)
        if route not in ROUTES:
            raise ValueError(f"route {route!r} is not one of {', '.join(ROUTES)}")
        with self._access() as db, write_transaction(db):
            self._write(db, {"content": self.text, "route": route, "model": model, "provider": provider})
        self._unsaved = False
        self._last_checkpoint = self._clock()

    def checkpoint(self) -> None:
        """Write the text so far now; append() calls this itself when 250 ms have passed."""
        if self._unsaved:
            with self._access() as db, write_transaction(db):
                self._write(db, {"content": self.text})
            self._unsaved = False
        self._last_checkpoint = self._clock()

    def finish(
        self,
        status: str = "complete",
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        ttft_ms: float | None = None,
        tok_s: float | None = None,
        confidence: float | None = None,
        escalation_reason: str | None = None,
        *,
        route: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        refusal: bool | None = None,
    ) -> Message:
        """Record the final text, status and facts, once. Route, model and provider change here
        when the cloud took the turn over; a fact left None keeps what the row has."""
        if self._finished:
            raise ReplyClosed(self.message_id)
        if status not in FINAL_STATUSES:
            raise ValueError(f"a reply finishes as one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        if route not in (None, *ROUTES):
            raise ValueError(f"route {route!r} is not one of {', '.join(ROUTES)}")
        facts = {
            "tokens_in": tokens_in, "tokens_out": tokens_out, "ttft_ms": ttft_ms, "tok_s": tok_s,
            "confidence": confidence, "escalation_reason": escalation_reason,
            "route": route, "model": model, "provider": provider,
            "refusal": None if refusal is None else int(refusal),
        }
        known = {name: value for name, value in facts.items() if value is not None}
        row: dict[str, object] = {"content": self.text, "status": status, "writer_pid": None, **known}
        with self._access() as db:
            with write_transaction(db):
                self._write(db, row)
                conversations.touch(db, self.conversation_id, now())
            self._finished = True
            return messages.get(db, self.message_id)

    def _write(self, db: sqlite_utils.Database, row: dict[str, object]) -> None:
        # Column names come from this class, never from callers' strings.
        assignments = ", ".join(f"{column} = ?" for column in row)
        cursor = db.execute(f"UPDATE messages SET {assignments} WHERE id = ?", [*row.values(), self.message_id])
        if cursor.rowcount == 0:
            raise MessageNotFound(self.message_id)

    def __enter__(self) -> ReplyWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._finished:
            self.finish("error" if isinstance(exc, Exception) else "interrupted")
