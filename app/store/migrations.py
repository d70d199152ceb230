"""The schema, as an ordered list of small migrations recorded in `_tandem_migrations`.

Add a migration by writing a new `m00N_...` function below the others; never edit a released one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import sqlite_utils

from app.store.database import write_transaction
from app.store.errors import ForeignDatabase, NewerSchema
from app.store.records import now, to_text

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS_TABLE = "_tandem_migrations"
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


def migrate(db: sqlite_utils.Database, migrations: Sequence[Migration] = MIGRATIONS) -> None:
    """Apply the migrations this database has not seen yet, all in one write transaction."""
    if not _pending(db, migrations):
        return
    with write_transaction(db):
        # Checked again under the write lock: another process may have migrated meanwhile.
        pending = _pending(db, migrations)
        db.table(MIGRATIONS_TABLE).create({"name": str, "applied": str}, pk="name", if_not_exists=True)
        for fn in pending:
            fn(db)
            db.table(MIGRATIONS_TABLE).insert({"name": fn.__name__, "applied": to_text(now())})


def check(db: sqlite_utils.Database) -> None:
    """Refuse, before anything is written, a file that is not Tandem's or is from a newer Tandem."""
    _pending(db, MIGRATIONS)


def _pending(db: sqlite_utils.Database, migrations: Sequence[Migration]) -> list[Migration]:
    table = db.table(MIGRATIONS_TABLE)
    if not table.exists():
        if db.table_names():
            raise ForeignDatabase(_path(db))
        return list(migrations)
    applied = {row["name"] for row in table.rows}
    known = {fn.__name__ for fn in MIGRATIONS}
    unknown = sorted(applied - known)
    if unknown:
        raise NewerSchema(_path(db), unknown)
    return [fn for fn in migrations if fn.__name__ not in applied]


def _path(db: sqlite_utils.Database) -> Path:
    main = next(row for row in db.query("PRAGMA database_list") if row["name"] == "main")
    return Path(main["file"])


@migration
def m001_conversations(db: sqlite_utils.Database) -> None:
    db.table("conversations").create(
        {
            "id": int,
            "title": str,
            "created": str,
            "updated": str,
            "cloud_opt_in": int,
            "local_only": int,
            "ephemeral": int,
            "archived": int,
            "model": str,
            "owner_pid": int,
        },
        pk="id",
        not_null=["title", "created", "updated"],
        defaults={"cloud_opt_in": 0, "local_only": 0, "ephemeral": 0, "archived": 0},
    )
    db.table("conversations").create_index(["archived", "updated"])


@migration
def m002_messages(db: sqlite_utils.Database) -> None:
    # id is INTEGER PRIMARY KEY, so the FTS index keys on it: it survives VACUUM, a bare rowid does not.
    db.table("messages").create(
        {
            "id": int,
            "conversation_id": int,
            "role": str,
            "content": str,
            "created": str,
            "status": str,
            "route": str,
            "model": str,
            "provider": str,
            "tokens_in": int,
            "tokens_out": int,
            "ttft_ms": float,
            "tok_s": float,
            "confidence": float,
            "escalation_reason": str,
            "parent_id": int,
            "writer_pid": int,
        },
        pk="id",
        not_null=["conversation_id", "role", "content", "created", "status"],
        defaults={"content": "", "status": "complete"},
        foreign_keys=[("conversation_id", "conversations", "id"), ("parent_id", "messages", "id")],
    )
    db.table("messages").create_index(["conversation_id"])
    # Start-up recovery looks only at replies still being written.
    db.execute("CREATE INDEX messages_partial ON messages(writer_pid) WHERE status = 'partial'")


@migration
def m003_messages_fts(db: sqlite_utils.Database) -> None:
    db.table("messages").enable_fts(
        ["content"], create_triggers=True, tokenize="porter unicode61 remove_diacritics 2"
    )


@migration
def m004_egress(db: sqlite_utils.Database) -> None:
    db.table("egress").create(
        {
            "id": int,
            "time": str,
            "conversation_id": int,
            "provider": str,
            "host": str,
            "payload": str,
            "payload_sha256": str,
            "payload_bytes": int,
            "bytes_sent": int,
            "bytes_received": int,
            "redactions": str,
        },
        pk="id",
        not_null=["time", "provider", "host", "payload_sha256", "payload_bytes", "bytes_sent",
                  "bytes_received", "redactions"],
        foreign_keys=[("conversation_id", "conversations", "id")],
    )
    db.table("egress").create_index(["conversation_id"])
    db.table("egress").create_index(["time"])


@migration
def m005_settings(db: sqlite_utils.Database) -> None:
    db.table("settings").create({"key": str, "value": str}, pk="key", not_null=["value"])


@migration
def m006_cloud_context(db: sqlite_utils.Database) -> None:
    """Each conversation's cloud-context policy and when it opted in; which local replies were
    refusals; and, per ledger row, the policy and how many earlier messages went out."""
    db.table("conversations").add_column("cloud_context", str)
    db.table("conversations").add_column("cloud_opt_in_at", str)
    # When an existing conversation opted in is unknown: count it from now, so nothing written
    # before this upgrade leaves unless the user picks "whole conversation".
    db.execute("UPDATE conversations SET cloud_opt_in_at = ? WHERE cloud_opt_in = 1", [to_text(now())])
    db.table("messages").add_column("refusal", int, not_null_default=0)
    db.table("egress").add_column("context_policy", str)
    db.table("egress").add_column("context_messages", int)


@migration
def m007_feedback(db: sqlite_utils.Database) -> None:
    # One row per local answer while "learn from use" is on: the router's signals for it, and
    # a label once the user (or an escalation) says whether it was good enough. Never sent anywhere.
    db.table("feedback").create(
        {
            "id": int,
            "message_id": int,
            "conversation_id": int,
            "model": str,
            "features": str,
            "confidence": float,
            "answer": str,
            "good": int,
            "source": str,
            "created": str,
            "labelled": str,
        },
        pk="id",
        not_null=["message_id", "conversation_id", "model", "features", "created"],
        foreign_keys=[("message_id", "messages", "id"), ("conversation_id", "conversations", "id")],
    )
    db.table("feedback").create_index(["message_id"], unique=True)
    db.table("feedback").create_index(["model", "good"])
