"""Store: the one object the app and the turn runner hold for history. It owns this process's
connection, serialises its threads, and turns SQLite's failures into StoreErrors."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sqlite_utils

from app.store import conversations, egress, export, feedback, messages, migrations, recovery, search, settings
from app.store.database import BUSY_TIMEOUT_S, open_database, translate_errors, use_wal, write_transaction
from app.store.errors import MessageNotFound, StoreError
from app.store.records import Conversation, EgressRecord, Message, SearchHit, now, to_text
from app.store.replies import Clock, ReplyWriter

if TYPE_CHECKING:
    from offload.events import Egress


class Store:
    """Open with Store.open(path); every method commits before it returns."""

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = threading.RLock()
        self._closed = False
        self._writers: weakref.WeakSet[ReplyWriter] = weakref.WeakSet()

    @classmethod
    def open(cls, path: Path | str | None = None, *, busy_timeout: float = BUSY_TIMEOUT_S) -> Store:
        """Open (creating if absent) and migrate the database; tidy after processes that died."""
        if path is None:
            from app.paths import default_db_path

            path = default_db_path()
        path = Path(path)
        db = open_database(path, busy_timeout)
        try:
            with translate_errors(path):
                migrations.check(db)
                use_wal(db)
                migrations.migrate(db)
                recovery.recover(db)
        except BaseException:
            db.close()
            raise
        return cls(db, path)

    def close(self) -> None:
        """Keep this process's unfinished replies, as interrupted, and delete its "don't keep"
        conversations."""
        with self._lock:
            if self._closed:
                return
            try:
                for writer in list(self._writers):
                    if not writer.finished:
                        with contextlib.suppress(MessageNotFound):  # deleted with its conversation
                            writer.finish("interrupted")
                with translate_errors(self.path):
                    recovery.release(self._db, os.getpid())
            finally:
                self._closed = True
                self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _access(self) -> Iterator[sqlite_utils.Database]:
        with self._lock, translate_errors(self.path):
            if self._closed:
                raise StoreError(f"the history store {self.path} is closed; open it again")
            yield self._db

    # ---- conversations

    def create_conversation(
        self,
        title: str,
        cloud_opt_in: bool = False,
        local_only: bool = False,
        ephemeral: bool = False,
        model: str | None = None,
    ) -> Conversation:
        with self._access() as db:
            return conversations.create(
                db, title, cloud_opt_in=cloud_opt_in, local_only=local_only, ephemeral=ephemeral, model=model
            )

    def list_conversations(self, include_archived: bool = False, limit: int | None = 200) -> list[Conversation]:
        """Most recently active first."""
        with self._access() as db:
            return conversations.recent(db, include_archived=include_archived, limit=limit)

    def get_conversation(self, conversation_id: int) -> Conversation:
        with self._access() as db:
            return conversations.get(db, conversation_id)

    def update_conversation(self, conversation_id: int, **fields: object) -> Conversation:
        """Edit title, cloud_opt_in, local_only, ephemeral, archived or model."""
        with self._access() as db:
            return conversations.update(db, conversation_id, **fields)

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete it with its messages and their search index rows; its egress rows lose the payload."""
        with self._access() as db:
            conversations.delete(db, conversation_id)

    # ---- messages

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        status: str = "complete",
        parent_id: int | None = None,
        created: datetime | None = None,
        **metadata: object,
    ) -> Message:
        """Committed before this returns: a user's message is safe before generation starts."""
        with self._access() as db:
            return messages.add(
                db, conversation_id, role, content, status=status, parent_id=parent_id, created=created, **metadata
            )

    def messages(self, conversation_id: int) -> list[Message]:
        with self._access() as db:
            conversations.get(db, conversation_id)
            return messages.of_conversation(db, conversation_id)

    def begin_reply(
        self,
        conversation_id: int,
        parent_id: int | None = None,
        route: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> ReplyWriter:
        """An assistant message, partial until finished, that checkpoints as text is appended."""
        message = self.add_message(
            conversation_id, "assistant", "", status="partial", parent_id=parent_id,
            route=route, model=model, provider=provider,
        )
        writer = ReplyWriter(self._access, message, clock)
        self._writers.add(writer)
        return writer

    # ---- search

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Messages containing every word of query (the last as a prefix), best match first."""
        with self._access() as db:
            return search.search(db, query, limit)

    # ---- egress ledger

    def record_egress(self, sent: Egress, *, conversation_id: int | None) -> EgressRecord:
        """Keeps the payload itself, or only its hash and size when the setting
        egress.keep_payload is false; and the cloud-context policy it was built under."""
        with self._access() as db:
            if conversation_id is not None:
                conversations.get(db, conversation_id)
            return egress.record(db, sent, conversation_id=conversation_id)

    def egress(self, conversation_id: int | None = None) -> list[EgressRecord]:
        """Newest first."""
        with self._access() as db:
            return egress.ledger(db, conversation_id)

    # ---- settings

    def get_setting(self, key: str, default: Any = None) -> Any:
        with self._access() as db:
            return settings.get(db, key, default)

    def set_setting(self, key: str, value: Any) -> None:
        with self._access() as db:
            settings.put(db, key, value)

    # ---- feedback on local answers (learning from use)

    def record_feedback(self, **row: object) -> None:
        """The router's signals of a local answer (see app.store.feedback.record)."""
        with self._access() as db:
            feedback.record(db, **row)  # type: ignore[arg-type]

    def label_reply(self, message_id: int, good: bool, source: str) -> bool:
        with self._access() as db:
            return feedback.label(db, message_id, good, source)

    def feedback_labels(self, model: str | None = None) -> list[feedback.Label]:
        with self._access() as db:
            return feedback.labels(db, model)

    def feedback_counts(self) -> dict[str, int]:
        with self._access() as db:
            return feedback.counts(db)

    # ---- export and import

    def export_json(self, conversation_id: int | None = None) -> dict[str, Any]:
        """One conversation, or all that are kept ("don't keep" ones are left out)."""
        with self._access() as db:
            return export.to_json(self._threads(db, conversation_id), now())

    def export_markdown(self, conversation_id: int | None = None) -> str:
        with self._access() as db:
            return export.to_markdown(self._threads(db, conversation_id))

    def import_json(self, text: str, source: str = "the input") -> ImportResult:
        """Add the file's conversations as new ones, all or none. One already here (same title,
        start time and messages) is skipped, so importing a file twice adds nothing twice."""
        parsed = export.parse(text, source)
        added: list[Conversation] = []
        skipped = 0
        with self._access() as db, write_transaction(db):
            for item in parsed:
                if _already_present(db, item):
                    skipped += 1
                else:
                    added.append(_insert_imported(db, item))
        return ImportResult(added, skipped)

    @staticmethod
    def _threads(db: sqlite_utils.Database, conversation_id: int | None) -> list[export.Thread]:
        if conversation_id is not None:
            chosen = [conversations.get(db, conversation_id)]
        else:
            kept = [c for c in conversations.recent(db, include_archived=True) if not c.ephemeral]
            chosen = sorted(kept, key=lambda c: (c.created, c.id))
        return [(c, messages.of_conversation(db, c.id)) for c in chosen]

    # ---- upkeep

    def vacuum(self) -> int:
        """Reclaim the space deleted rows left; returns the bytes the files shrank by."""
        with self._access() as db:
            before = _files_size(self.path)
            db.table("messages").optimize()
            db.vacuum()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return max(0, before - _files_size(self.path))

    def integrity_check(self) -> list[str]:
        """SQLite's own check: ["ok"] for a healthy file."""
        with self._access() as db:
            return [row[0] for row in db.execute("PRAGMA integrity_check")]


@dataclass(frozen=True)
class ImportResult:
    added: list[Conversation]
    skipped: int
    """Conversations of the file that were already in the database."""


def _already_present(db: sqlite_utils.Database, item: export.ImportedConversation) -> bool:
    if item.created is None:  # nothing to match on: a conversation with no start time is new
        return False
    wanted = [(m.role, m.content) for m in item.messages]
    for row in db.table("conversations").rows_where("created = ? AND title = ?", [to_text(item.created), item.title]):
        present = messages.of_conversation(db, row["id"])
        if [(m.role, m.content) for m in present] == wanted:
            return True
    return False


def _insert_imported(db: sqlite_utils.Database, item: export.ImportedConversation) -> Conversation:
    created = item.created or now()
    conversation = conversations.create(
        db, item.title, cloud_opt_in=item.cloud_opt_in, local_only=item.local_only,
        archived=item.archived, model=item.model, created=created,
    )
    ids: list[int] = []
    for message in item.messages:
        added = messages.add(
            db, conversation.id, message.role, message.content, status=message.status,
            parent_id=None if message.parent_index is None else ids[message.parent_index],
            created=message.created or created, **message.metadata,
        )
        ids.append(added.id)
    last_active = item.updated or (messages.get(db, ids[-1]).created if ids else created)
    conversations.touch(db, conversation.id, last_active)
    return conversations.get(db, conversation.id)


def _files_size(path: Path) -> int:
    sidecars = [path, path.with_name(path.name + "-wal")]
    return sum(p.stat().st_size for p in sidecars if p.exists())
