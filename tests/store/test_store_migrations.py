"""Each migration applied to a database at the previous schema version, and the files the store
must refuse to migrate."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from app.store import ForeignDatabase, NewerSchema, Store
from app.store.migrations import MIGRATIONS, MIGRATIONS_TABLE, migrate

NOW = "2026-01-02T03:04:05.000000+00:00"

# A row for every table that exists at some version, to show later migrations keep them.
SAMPLE_ROWS = {
    "conversations": {"id": 1, "title": "Bread", "created": NOW, "updated": NOW},
    "messages": {"id": 1, "conversation_id": 1, "role": "user", "content": "sourdough starter", "created": NOW},
    "egress": {
        "id": 1, "time": NOW, "conversation_id": 1, "provider": "openai", "host": "api.openai.com",
        "payload": "{}", "payload_sha256": "0" * 64, "payload_bytes": 2, "bytes_sent": 10,
        "bytes_received": 20, "redactions": "{}",
    },
    "settings": {"key": "theme", "value": '"dark"'},
}


def database_at(path: Path, version: int) -> sqlite_utils.Database:
    """A database with the first `version` migrations applied, holding one sample row per table."""
    db = sqlite_utils.Database(path)
    db.execute("PRAGMA foreign_keys = ON")
    migrate(db, MIGRATIONS[:version])
    for table, row in SAMPLE_ROWS.items():
        if db[table].exists():
            db[table].insert(row)
    return db


def contents(db: sqlite_utils.Database) -> dict[str, list[dict]]:
    return {table: list(db[table].rows) for table in SAMPLE_ROWS if db[table].exists()}


@pytest.mark.parametrize("version", range(len(MIGRATIONS)), ids=[m.__name__ for m in MIGRATIONS])
def test_each_migration_keeps_the_previous_versions_rows_and_is_recorded(tmp_path, version):
    db = database_at(tmp_path / "t.db", version)
    before = contents(db)

    migrate(db, MIGRATIONS[: version + 1])

    after = contents(db)
    # Columns a migration adds are new; every value the rows had is kept.
    kept = {table: [{k: row[k] for k in old} for row, old in zip(after[table], before[table])] for table in before}
    assert kept == before and all(len(after[t]) == len(before[t]) for t in before)
    applied = [row["name"] for row in db[MIGRATIONS_TABLE].rows]
    assert applied == [m.__name__ for m in MIGRATIONS[: version + 1]]
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_m001_conversations_default_to_private_and_kept(tmp_path):
    db = database_at(tmp_path / "t.db", 0)
    migrate(db, MIGRATIONS[:1])
    db["conversations"].insert({"title": "New", "created": NOW, "updated": NOW})
    row = db["conversations"].get(1)
    assert (row["cloud_opt_in"], row["local_only"], row["ephemeral"], row["archived"]) == (0, 0, 0, 0)


def test_m002_messages_belong_to_an_existing_conversation(tmp_path):
    db = database_at(tmp_path / "t.db", 1)
    migrate(db, MIGRATIONS[:2])
    message_id = db["messages"].insert({"conversation_id": 1, "role": "user", "content": "hi", "created": NOW}).last_pk
    assert db["messages"].get(message_id)["status"] == "complete"
    with pytest.raises(sqlite3.IntegrityError):
        db["messages"].insert({"conversation_id": 99, "role": "user", "content": "x", "created": NOW})


def test_m003_indexes_messages_written_before_it_and_after_it(tmp_path):
    db = database_at(tmp_path / "t.db", 2)
    migrate(db, MIGRATIONS[:3])
    db["messages"].insert({"conversation_id": 1, "role": "assistant", "content": "feed the starter", "created": NOW})

    def matches(word: str) -> list[int]:
        return [r[0] for r in db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?", [word])]

    assert matches("sourdough") == [1]
    assert sorted(matches("starter")) == [1, 2]


def test_m004_egress_rows_name_an_existing_conversation_or_none(tmp_path):
    db = database_at(tmp_path / "t.db", 3)
    migrate(db, MIGRATIONS[:4])
    db["egress"].insert({**SAMPLE_ROWS["egress"], "id": 2, "conversation_id": None})
    with pytest.raises(sqlite3.IntegrityError):
        db["egress"].insert({**SAMPLE_ROWS["egress"], "id": 3, "conversation_id": 42})


def test_m005_settings_hold_one_value_per_key(tmp_path):
    db = database_at(tmp_path / "t.db", 4)
    migrate(db, MIGRATIONS[:5])
    db["settings"].insert({"key": "mode", "value": '"ask"'})
    with pytest.raises(sqlite3.IntegrityError):
        db["settings"].insert({"key": "mode", "value": '"auto"'})


def test_opening_migrates_once_and_reopening_changes_nothing(db_path):
    Store.open(db_path).close()
    schema = sqlite_utils.Database(db_path).execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    Store.open(db_path).close()
    again = sqlite_utils.Database(db_path)
    assert again.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    assert again[MIGRATIONS_TABLE].count == len(MIGRATIONS)


def test_another_programs_database_is_refused_and_left_byte_for_byte(db_path):
    db_path.parent.mkdir(parents=True)
    sqlite_utils.Database(db_path)["recipes"].insert({"name": "bread"})
    original = db_path.read_bytes()

    with pytest.raises(ForeignDatabase, match="another program"):
        Store.open(db_path)
    assert db_path.read_bytes() == original


def test_a_database_from_a_newer_tandem_is_refused(db_path):
    Store.open(db_path).close()
    sqlite_utils.Database(db_path)[MIGRATIONS_TABLE].insert({"name": "m999_from_the_future", "applied": NOW})

    with pytest.raises(NewerSchema, match="m999_from_the_future"):
        Store.open(db_path)


def test_m006_conversations_that_had_opted_in_count_their_opt_in_from_the_upgrade(tmp_path):
    db = database_at(tmp_path / "t.db", 5)
    db["conversations"].insert({"id": 2, "title": "Cloudy", "created": NOW, "updated": NOW, "cloud_opt_in": 1})
    migrate(db, MIGRATIONS[:6])
    rows = {row["id"]: row for row in db["conversations"].rows}
    assert rows[1]["cloud_opt_in_at"] is None
    assert rows[2]["cloud_opt_in_at"] > NOW  # earlier turns stay home unless "whole conversation"
    assert [row["refusal"] for row in db["messages"].rows] == [0]
