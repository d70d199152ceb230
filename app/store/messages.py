"""Message rows: adding one (committed before anything else happens) and reading a conversation's."""

from __future__ import annotations

import os
from datetime import datetime

import sqlite_utils

from app.store import conversations
from app.store.database import insert_row, write_transaction
from app.store.errors import MessageNotFound
from app.store.records import MESSAGE_METADATA, ROLES, ROUTES, STATUSES, Message, now, to_text


def add(
    db: sqlite_utils.Database,
    conversation_id: int,
    role: str,
    content: str,
    *,
    status: str = "complete",
    parent_id: int | None = None,
    created: datetime | None = None,
    **metadata: object,
) -> Message:
    _check(role, status, metadata)
    created = created or now()
    row = {
        "conversation_id": conversation_id,
        "role": role,
        "content": content,
        "created": to_text(created),
        "status": status,
        "parent_id": parent_id,
        # A partial row names its writer, so start-up recovery can tell a live stream from a dead one.
        "writer_pid": os.getpid() if status == "partial" else None,
        **metadata,
    }
    with write_transaction(db):
        conversations.touch(db, conversation_id, created)
        if parent_id is not None:
            get(db, parent_id)
        message_id = insert_row(db, "messages", row)
    return get(db, message_id)


def get(db: sqlite_utils.Database, message_id: int) -> Message:
    rows = list(db.table("messages").rows_where("id = ?", [message_id]))
    if not rows:
        raise MessageNotFound(message_id)
    return Message.from_row(rows[0])


def of_conversation(db: sqlite_utils.Database, conversation_id: int) -> list[Message]:
    """In the order they were written."""
    rows = db.table("messages").rows_where("conversation_id = ?", [conversation_id], order_by="id")
    return [Message.from_row(row) for row in rows]


def _check(role: str, status: str, metadata: dict[str, object]) -> None:
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if metadata.get("route") not in (None, *ROUTES):
        raise ValueError(f"route {metadata['route']!r} is not one of {', '.join(ROUTES)}")
    unknown = set(metadata) - set(MESSAGE_METADATA)
    if unknown:
        raise ValueError(f"unknown message fields {', '.join(sorted(unknown))}; known: {', '.join(MESSAGE_METADATA)}")
