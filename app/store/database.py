"""Opening the history database file safely: WAL, a busy timeout, foreign keys, write transactions
that take the lock up front, and SQLite's failures turned into the store's clear errors."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from app.store.errors import StoreCorrupt, StoreError, StoreLocked, StoreReadOnly

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another process's write to finish before giving up."""

_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_READONLY_CODES = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}
_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def open_database(path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> sqlite_utils.Database:
    """One connection for this process, shared by its threads (the store serialises access).
    Nothing is written yet: call use_wal() once the file is known to be Tandem's."""
    _refuse_read_only(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create the folder for {path} ({error.strerror}); "
                         "point --db or TANDEM_HOME at a writable place") from None
    with translate_errors(path):
        conn = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False)
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False)
            db.execute("PRAGMA foreign_keys = ON")
            db.table_names()  # reads the schema now, so a damaged file fails here, not later
        except BaseException:
            conn.close()
            raise
    return db


def use_wal(db: sqlite_utils.Database) -> None:
    """WAL lets readers go on while one process writes; NORMAL sync keeps every commit across a
    process crash (not across a power cut), which is the failure a chat app meets.
    Secure delete zeroes deleted rows in the file, so deleting a conversation really removes it."""
    with db.ensure_autocommit_on():
        db.conn.execute("PRAGMA journal_mode = WAL").fetchone()
        db.conn.execute("PRAGMA synchronous = NORMAL")
        db.conn.execute("PRAGMA secure_delete = ON")


def _refuse_read_only(path: Path) -> None:
    # The mode bits are checked by hand: a superuser could still write, but the user said no.
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a database file; point --db at a file")
    if not os.access(path, os.W_OK) or not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise StoreReadOnly(path)


@contextlib.contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's file-level failures into StoreErrors; anything else is a bug and propagates."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        code = getattr(error, "sqlite_errorcode", -1) & 0xFF
        if code in _BUSY_CODES:
            raise StoreLocked(path) from None
        if code in _READONLY_CODES:
            raise StoreReadOnly(path) from None
        if code in _CORRUPT_CODES or type(error) is sqlite3.DatabaseError:
            raise StoreCorrupt(path, str(error)) from None
        raise


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """A transaction that takes the write lock at BEGIN.

    A deferred transaction that reads and then writes can fail at once with SQLITE_BUSY when
    another process wrote meanwhile; taking the lock first makes it wait the busy timeout instead.
    Nested use becomes a savepoint of the outer transaction.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    try:
        db.commit()
    except BaseException:
        db.rollback()
        raise


def insert_row(db: sqlite_utils.Database, table: str, row: dict[str, Any]) -> int:
    """Insert `row` into a rowid table and return the new row's id."""
    inserted = db.table(table).insert(row).last_pk
    if not isinstance(inserted, int):  # only a table without a rowid answers otherwise
        raise StoreError(f"inserting into {table} gave no row id ({inserted!r})")
    return inserted
