"""Feedback on local answers, for refitting a model's calibration from use: the router's signals
of each local answer and, once known, whether it was good enough. Written only while the user's
"learn from use" setting is on; it never leaves the machine."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import sqlite_utils

from app.store.database import write_transaction
from app.store.records import now, to_text

SOURCES = ("explicit", "recloud", "agreement")
"""A key in the chat; a /cloud re-ask after the local answer; a local draft compared with the cloud's answer."""


@dataclass(frozen=True)
class Label:
    message_id: int
    model: str
    features: dict[str, float]
    good: bool
    source: str


def record(
    db: sqlite_utils.Database, *, message_id: int, conversation_id: int, model: str,
    features: Mapping[str, float], confidence: float | None, answer: str,
    good: bool | None = None, source: str | None = None,
) -> None:
    """The signals of one local answer (replacing any earlier row for the message)."""
    stamp = to_text(now())
    with write_transaction(db):
        db.table("feedback").upsert(
            {"message_id": message_id, "conversation_id": conversation_id, "model": model,
             "features": json.dumps(dict(features)), "confidence": confidence, "answer": answer,
             "good": None if good is None else int(good), "source": source, "created": stamp,
             "labelled": stamp if good is not None else None},
            pk="message_id", alter=False,
        )


def label(db: sqlite_utils.Database, message_id: int, good: bool, source: str) -> bool:
    """Label the answer of `message_id`; False when no signals were kept for it (learning was off
    when it was written, or it never ran locally)."""
    if source not in SOURCES:
        raise ValueError(f"unknown feedback source {source!r}; one of {', '.join(SOURCES)}")
    with write_transaction(db):
        cursor = db.execute(
            "UPDATE feedback SET good = ?, source = ?, labelled = ? WHERE message_id = ?",
            [int(good), source, to_text(now()), message_id],
        )
    return cursor.rowcount > 0


def labels(db: sqlite_utils.Database, model: str | None = None) -> list[Label]:
    where, params = "good IS NOT NULL", []
    if model is not None:
        where, params = where + " AND model = ?", [model]
    return [
        Label(row["message_id"], row["model"], {k: float(v) for k, v in json.loads(row["features"]).items()},
              bool(row["good"]), row["source"])
        for row in db.table("feedback").rows_where(where, params, order_by="id")
    ]


def counts(db: sqlite_utils.Database) -> dict[str, int]:
    """How many answers have signals kept, and how many are labelled good and not good."""
    row = db.execute(
        "SELECT COUNT(*), SUM(good = 1), SUM(good = 0) FROM feedback").fetchone()
    return {"answers": row[0] or 0, "good": row[1] or 0, "not_good": row[2] or 0}
