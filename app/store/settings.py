"""User settings kept beside the history: a key and a JSON value per row."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from app.store.database import write_transaction


def get(db: sqlite_utils.Database, key: str, default: Any = None) -> Any:
    row = db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return default if row is None else json.loads(row[0])


def put(db: sqlite_utils.Database, key: str, value: Any) -> None:
    """value must be JSON-serialisable (a TypeError says so otherwise)."""
    text = json.dumps(value)
    with write_transaction(db):
        db.table("settings").upsert({"key": key, "value": text}, pk="key")
