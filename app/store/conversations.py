"""Conversation rows: creating, reading, listing newest first, editing and really deleting them."""

from __future__ import annotations

import os
from datetime import datetime

import sqlite_utils

from app.store.database import insert_row, write_transaction
from app.store.errors import ConversationNotFound
from app.store.records import Conversation, now, to_text

EDITABLE: frozenset[str] = frozenset(
    {"title", "cloud_opt_in", "local_only", "ephemeral", "archived", "model", "cloud_context"}
)


def create(
    db: sqlite_utils.Database,
    title: str,
    *,
    cloud_opt_in: bool = False,
    local_only: bool = False,
    ephemeral: bool = False,
    archived: bool = False,
    model: str | None = None,
    created: datetime | None = None,
    updated: datetime | None = None,
) -> Conversation:
    created = created or now()
    row = {
        "title": title,
        "created": to_text(created),
        "updated": to_text(updated or created),
        "cloud_opt_in": int(cloud_opt_in),
        "cloud_opt_in_at": to_text(created) if cloud_opt_in else None,
        "local_only": int(local_only),
        "ephemeral": int(ephemeral),
        "archived": int(archived),
        "model": model,
        "owner_pid": os.getpid() if ephemeral else None,
    }
    with write_transaction(db):
        conversation_id = insert_row(db, "conversations", row)
    return get(db, conversation_id)


def get(db: sqlite_utils.Database, conversation_id: int) -> Conversation:
    rows = list(db.table("conversations").rows_where("id = ?", [conversation_id]))
    if not rows:
        raise ConversationNotFound(conversation_id)
    return Conversation.from_row(rows[0])


def recent(
    db: sqlite_utils.Database, *, include_archived: bool = False, limit: int | None = None
) -> list[Conversation]:
    """Most recently active first."""
    rows = db.table("conversations").rows_where(
        None if include_archived else "archived = 0", order_by="updated DESC, id DESC", limit=limit
    )
    return [Conversation.from_row(row) for row in rows]


def update(db: sqlite_utils.Database, conversation_id: int, **fields: object) -> Conversation:
    unknown = set(fields) - EDITABLE
    if unknown:
        raise ValueError(f"cannot edit {', '.join(sorted(unknown))}; editable: {', '.join(sorted(EDITABLE))}")
    row: dict[str, object] = {
        key: int(value) if isinstance(value, bool) else value for key, value in fields.items()
    }
    if "ephemeral" in fields:
        row["owner_pid"] = os.getpid() if fields["ephemeral"] else None
    with write_transaction(db):
        before = get(db, conversation_id)
        if fields.get("cloud_opt_in") and not before.cloud_opt_in:
            row["cloud_opt_in_at"] = to_text(now())
        if row:
            db.table("conversations").update(conversation_id, row)
    return get(db, conversation_id)


def touch(db: sqlite_utils.Database, conversation_id: int, moment: datetime) -> None:
    """Mark the conversation active at moment, so listing puts it first."""
    cursor = db.execute(
        "UPDATE conversations SET updated = ? WHERE id = ?", [to_text(moment), conversation_id]
    )
    if cursor.rowcount == 0:
        raise ConversationNotFound(conversation_id)


def delete(db: sqlite_utils.Database, conversation_id: int) -> None:
    """Messages go with their FTS rows (by trigger); the egress ledger keeps that bytes left,
    but forgets the payload and the conversation it came from."""
    with write_transaction(db):
        get(db, conversation_id)
        db.execute(
            "UPDATE egress SET payload = NULL, conversation_id = NULL WHERE conversation_id = ?",
            [conversation_id],
        )
        db.table("feedback").delete_where("conversation_id = ?", [conversation_id])  # labels go with their answers
        db.table("messages").delete_where("conversation_id = ?", [conversation_id])
        db.table("conversations").delete(conversation_id)
