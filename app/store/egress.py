"""The egress ledger: one row per request that left the machine, with what was sent (or only
its hash and size, if the user chose so), where to, and how many bytes went each way."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import TYPE_CHECKING

import sqlite_utils

from app.store import settings
from app.store.database import insert_row, write_transaction
from app.store.records import EgressRecord, now, to_text

if TYPE_CHECKING:
    from offload.events import Egress

KEEP_PAYLOAD_SETTING = "egress.keep_payload"
"""True (the default): the ledger keeps the exact redacted payload; False: its hash and size only."""


def record(
    db: sqlite_utils.Database, sent: Egress, *, conversation_id: int | None, time: datetime | None = None
) -> EgressRecord:
    """One row for `sent`, read from its own fields (the request as sent, the wire's counts)."""
    payload = sent.payload
    encoded = payload.encode("utf-8")
    keep = bool(settings.get(db, KEEP_PAYLOAD_SETTING, True))
    row = {
        "time": to_text(time or now()),
        "conversation_id": conversation_id,
        "provider": sent.provider,
        "host": sent.host,
        "payload": payload if keep else None,
        "payload_sha256": hashlib.sha256(encoded).hexdigest(),
        "payload_bytes": len(encoded),
        "bytes_sent": sent.bytes_sent,
        "bytes_received": sent.bytes_received,
        "redactions": json.dumps(dict(sent.redactions), sort_keys=True),
        "context_policy": sent.context_policy,
        "context_messages": sent.context_messages,
    }
    with write_transaction(db):
        egress_id = insert_row(db, "egress", row)
    return EgressRecord.from_row(db.table("egress").get(egress_id))


def ledger(db: sqlite_utils.Database, conversation_id: int | None = None) -> list[EgressRecord]:
    """Newest first; every request, or those of one conversation."""
    where, args = ("conversation_id = ?", [conversation_id]) if conversation_id is not None else (None, None)
    rows = db.table("egress").rows_where(where, args, order_by="time DESC, id DESC")
    return [EgressRecord.from_row(row) for row in rows]
