"""`tandem history ...` as a user runs it: the everyday commands, and one clear line on stderr with
a non-zero exit (no traceback, nothing overwritten) for a locked, read-only or damaged file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from store_helpers import REPO_ROOT, run_cli

from app.store import Store


@pytest.fixture
def saved(db_path):
    """A database file with two conversations, closed."""
    with Store.open(db_path) as store:
        soup = store.create_conversation("Soup")
        question = store.add_message(soup.id, "user", "How long does lentil soup take?")
        store.add_message(soup.id, "assistant", "About 30 minutes.", parent_id=question.id, route="local")
        store.add_message(store.create_conversation("Taxes").id, "user", "What is a deduction?")
    return db_path


def assert_clean_failure(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tandem: "), done.stderr
    for word in words:
        assert word in lines[0]


def test_list_search_and_delete(saved):
    listing = run_cli(saved, "list")
    assert listing.returncode == 0
    assert [line.split("  ")[-1] for line in listing.stdout.splitlines()] == ["Taxes", "Soup"]

    found = run_cli(saved, "search", "lentil", "soup")
    assert found.returncode == 0 and "Soup · user: How long does «lentil» «soup» take?" in found.stdout

    deleted = run_cli(saved, "delete", "1")
    assert deleted.returncode == 0 and "Deleted conversation 1 (Soup)" in deleted.stdout
    assert run_cli(saved, "search", "lentil").stdout.strip() == "No messages match."
    assert run_cli(saved, "vacuum").returncode == 0
    assert_clean_failure(run_cli(saved, "delete", "1"), "no conversation 1")


def test_export_to_a_file_and_import_it_into_another_database(saved, tmp_path):
    out = tmp_path / "all.json"
    exported = run_cli(saved, "export", "--format", "json", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert [c["title"] for c in json.loads(out.read_text())["conversations"]] == ["Soup", "Taxes"]
    assert_clean_failure(run_cli(saved, "export", "--format", "json", "-o", str(out)), "already exists")

    other = tmp_path / "other.db"
    imported = run_cli(other, "import", str(out))
    assert imported.returncode == 0 and "Imported 2 conversation(s) with 3 message(s)." in imported.stdout
    assert run_cli(other, "export", "1").stdout == run_cli(saved, "export", "1").stdout
    assert run_cli(other, "export").stdout.startswith("# Soup\n")
    again = run_cli(other, "import", str(out))
    assert again.returncode == 0 and "Imported 0 conversation(s) with 0 message(s); 2 already here, skipped." in again.stdout


def test_a_bad_import_file_changes_nothing(saved, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"conversations": [{"title": "x", "messages": [{"role": "wizard", "content": "hi"}]}]}')
    before = run_cli(saved, "export", "--format", "md").stdout

    assert_clean_failure(run_cli(saved, "import", str(bad)), str(bad), "role 'wizard'")
    assert_clean_failure(run_cli(saved, "import", str(tmp_path / "missing.json")), "No such file")
    assert run_cli(saved, "export", "--format", "md").stdout == before


def test_a_read_only_database_is_refused_and_left_as_it_was(saved):
    original = saved.read_bytes()
    saved.chmod(0o444)
    try:
        assert_clean_failure(run_cli(saved, "list"), "read-only", str(saved))
        assert saved.read_bytes() == original
    finally:
        saved.chmod(0o644)


@pytest.mark.parametrize("damage", ["not a database at all", "a damaged schema page"])
def test_a_damaged_database_is_refused_and_never_recreated(saved, damage):
    if damage == "not a database at all":
        saved.write_bytes(b"these are my notes, not SQLite\n" * 200)
    else:
        data = bytearray(saved.read_bytes())
        # The rest of page 1 after the file header: the schema's b-tree page itself, so the
        # damage hits the schema however many pages it has grown to.
        data[100:4096] = bytes(range(256)) * 15 + bytes(156)
        saved.write_bytes(bytes(data))
    original = saved.read_bytes()

    for command in (["list"], ["search", "soup"], ["import", os.devnull]):
        assert_clean_failure(run_cli(saved, *command), "damaged", "left untouched")
    assert saved.read_bytes() == original


def test_a_locked_database_fails_clearly_and_readers_still_read_while_another_process_writes(saved):
    # One process (this test) mid-write: WAL lets others read, and a write waits, then gives up.
    writer = sqlite3.connect(saved, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO settings VALUES ('busy', 'true')")
    try:
        delete = subprocess.Popen(
            [sys.executable, "-m", "app", "--db", str(saved), "history", "delete", "1"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        listing = run_cli(saved, "list")
        stdout, stderr = delete.communicate(timeout=60)
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    assert listing.returncode == 0 and "Soup" in listing.stdout
    assert_clean_failure(subprocess.CompletedProcess(delete.args, delete.returncode, stdout, stderr), "locked")
    assert "Soup" in run_cli(saved, "list").stdout
