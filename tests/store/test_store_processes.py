"""Durability across processes: two Tandems writing one file at once, and a writer killed with
SIGKILL at random moments; afterwards the file is sound and nothing committed is missing."""

from __future__ import annotations

import random
import signal
import sqlite3
import time

import pytest
from store_child import TOKENS
from store_helpers import raw_rows, spawn_child

from app.store import Store

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def fts_integrity_ok(db_path) -> bool:
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")
        return True
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def test_two_processes_writing_at_once_lose_and_corrupt_nothing(db_path):
    Store.open(db_path).close()
    per_process = 25
    start_at = time.time() + 1.5  # both have opened the store by then, and start together
    children = [spawn_child("burst", str(db_path), tag, str(per_process), str(start_at)) for tag in ("left", "right")]
    for child in children:
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 0 and stdout.strip() == "done", stderr

    with Store.open(db_path) as store:
        assert store.integrity_check() == ["ok"]
        conversations = store.list_conversations(limit=None)
        assert sorted(c.title for c in conversations) == sorted(
            f"{tag} {n}" for tag in ("left", "right") for n in range(per_process)
        )
        for conversation in conversations:
            tag, n = conversation.title.split()
            user, reply = store.messages(conversation.id)
            assert (user.content, user.role) == (f"{tag} asks {n}", "user")
            assert (reply.content, reply.status, reply.parent_id) == ("".join(TOKENS[:30]), "complete", user.id)
            assert [e.payload for e in store.egress(conversation.id)] == [f"{tag} payload {n}"]
        assert len(store.search("asks", limit=1000)) == 2 * per_process
    assert fts_integrity_ok(db_path)


def test_a_writer_killed_at_random_moments_leaves_a_sound_file_and_every_user_message(db_path):
    rng = random.Random(20261121)
    committed_users: set[int] = set()
    seen_replies: set[int] = set()
    for round_ in range(20):
        child = spawn_child("stream", str(db_path))
        if round_ % 2 == 0:
            # Half the kills land anywhere, start-up and the first migration included.
            time.sleep(rng.uniform(0.05, 0.6))
        else:
            assert child.stdout.readline() == "ready\n", child.stderr.read()
            time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait()
        for line in child.stdout.read().splitlines():
            kind, _, number = line.partition(" ")
            if kind == "user":
                committed_users.add(int(number))
            elif kind == "reply":
                seen_replies.add(int(number))

        with Store.open(db_path) as store:
            assert store.integrity_check() == ["ok"], f"round {round_}"
        assert fts_integrity_ok(db_path), f"round {round_}"
        users = {row[0] for row in raw_rows(db_path, "SELECT id FROM messages WHERE role = 'user'")}
        assert committed_users <= users, f"round {round_}: committed user messages lost"
        assert raw_rows(db_path, "SELECT count(*) FROM messages WHERE status = 'partial'") == [(0,)]

    replies = raw_rows(db_path, "SELECT id, status, content FROM messages WHERE role = 'assistant'")
    assert seen_replies <= {row[0] for row in replies}
    interrupted = [content for _, status, content in replies if status == "interrupted"]
    assert interrupted, "no kill landed mid-reply; the test did not test recovery"
    stream = "".join(TOKENS[:2000])
    for content in interrupted:
        assert stream.startswith(content), "an interrupted reply is not a prefix of what was streamed"
