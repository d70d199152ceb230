"""What opening and closing the store tidy up: replies a dead (or closing) process left partial
become interrupted, never dropped, and its "don't keep" conversations are deleted.
Rows of another live process are left alone: two Tandems may share one file."""

from __future__ import annotations

import os

import sqlite_utils

from app.store import conversations
from app.store.database import write_transaction


def recover(db: sqlite_utils.Database) -> None:
    """At start-up: tidy after every process that is gone."""
    dead_writers = [pid for pid in _partial_writers(db) if not process_alive(pid)]
    dead_owners = [pid for pid in _ephemeral_owners(db) if not process_alive(pid)]
    if dead_writers or dead_owners:
        with write_transaction(db):
            _abandon(db, dead_writers, dead_owners)


def release(db: sqlite_utils.Database, pid: int) -> None:
    """At close: tidy after this process."""
    if pid in _partial_writers(db) or pid in _ephemeral_owners(db):
        with write_transaction(db):
            _abandon(db, [pid], [pid])


def _abandon(db: sqlite_utils.Database, writers: list[int | None], owners: list[int | None]) -> None:
    for pid in writers:
        db.execute(
            "UPDATE messages SET status = 'interrupted', writer_pid = NULL "
            "WHERE status = 'partial' AND writer_pid IS ?",
            [pid],
        )
    for pid in owners:
        ids = [row[0] for row in db.execute(
            "SELECT id FROM conversations WHERE ephemeral = 1 AND owner_pid IS ?", [pid]
        )]
        for conversation_id in ids:
            conversations.delete(db, conversation_id)


def process_alive(pid: int | None) -> bool:
    """Whether pid names a running process; None (no owner recorded) counts as gone."""
    if pid is None or os.name != "posix":
        # Elsewhere os.kill(pid, 0) is not a probe, so the row is treated as abandoned.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _partial_writers(db: sqlite_utils.Database) -> list[int | None]:
    return [row[0] for row in db.execute(
        "SELECT DISTINCT writer_pid FROM messages WHERE status = 'partial'"
    )]


def _ephemeral_owners(db: sqlite_utils.Database) -> list[int | None]:
    return [row[0] for row in db.execute(
        "SELECT DISTINCT owner_pid FROM conversations WHERE ephemeral = 1"
    )]
