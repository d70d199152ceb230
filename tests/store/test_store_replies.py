"""The reply writer: a streaming reply reaches the file in checkpoints at most 250 ms apart, never
a commit per token, and a reply its writer abandoned is kept, marked interrupted."""

from __future__ import annotations

import sqlite3

import pytest
from store_helpers import raw_rows, spawn_child

from app.store import MessageNotFound, ReplyClosed, Store


@pytest.fixture
def question(store):
    conversation = store.create_conversation("Stream")
    return store.add_message(conversation.id, "user", "Tell me a story")


class Observer:
    """A second connection to the file: what a crash right now would leave behind."""

    def __init__(self, path) -> None:
        self.conn = sqlite3.connect(path)

    def content(self, message_id: int) -> str:
        return self.conn.execute("SELECT content FROM messages WHERE id = ?", [message_id]).fetchone()[0]

    def commits_seen(self) -> int:
        # data_version changes whenever another connection commits to the file.
        return self.conn.execute("PRAGMA data_version").fetchone()[0]


def test_the_reply_row_exists_as_partial_before_any_token(store, db_path, question):
    reply = store.begin_reply(question.conversation_id, question.id, route="local", model="nano", provider="mlc")
    assert raw_rows(db_path, "SELECT status, content, parent_id, route FROM messages WHERE id = ?", reply.message_id) == [
        ("partial", "", question.id, "local")
    ]


def test_tokens_within_250_ms_cost_no_commit_and_the_next_one_after_writes_them_all(store, db_path, question, clock):
    reply = store.begin_reply(question.conversation_id, question.id, clock=clock)
    observer = Observer(db_path)
    commits = observer.commits_seen()

    for n in range(100):
        reply.append(f"w{n} ")
        clock.advance(2)  # 100 tokens in 200 ms
    assert observer.commits_seen() == commits
    assert observer.content(reply.message_id) == ""

    clock.advance(50)
    reply.append("end")
    assert observer.content(reply.message_id) == reply.text
    assert observer.commits_seen() != commits


def test_what_is_persisted_is_never_more_than_250_ms_behind_the_stream(store, db_path, question, clock):
    reply = store.begin_reply(question.conversation_id, question.id, clock=clock)
    observer = Observer(db_path)
    appended_at: dict[str, int] = {"": clock.ms}
    versions = set()

    for n in range(430):  # one token every 7 ms for about 3 s
        clock.advance(7)
        reply.append(f"t{n} ")
        appended_at[reply.text] = clock.ms
        persisted = observer.content(reply.message_id)
        assert persisted in appended_at, "the file holds a text the stream never had"
        assert clock.ms - appended_at[persisted] < 250
        versions.add(persisted)

    # About 3 s / 250 ms checkpoints: far fewer writes than tokens.
    assert 10 <= len(versions) <= 14


def test_finish_records_text_status_and_facts_and_closes_the_reply(store, question, clock):
    reply = store.begin_reply(question.conversation_id, question.id, route="local", model="nano", provider="mlc", clock=clock)
    reply.append("Once upon")
    reply.append(" a time.")

    done = reply.finish(
        "complete", tokens_in=9, tokens_out=4, ttft_ms=120.0, tok_s=33.3, confidence=0.87, escalation_reason=None,
    )

    assert store.messages(question.conversation_id)[-1] == done
    assert (done.content, done.status, done.route, done.model, done.tokens_out, done.confidence) == (
        "Once upon a time.", "complete", "local", "nano", 4, 0.87,
    )
    with pytest.raises(ReplyClosed):
        reply.append("more")


def test_a_discarded_local_draft_is_replaced_by_the_clouds_reply(store, db_path, question, clock):
    reply = store.begin_reply(question.conversation_id, question.id, route="local", model="nano", clock=clock)
    reply.append("I think maybe")
    reply.discard()
    assert Observer(db_path).content(reply.message_id) == ""

    reply.append("The answer is 42.")
    done = reply.finish("complete", route="cloud", model="gpt", provider="openai", escalation_reason="low confidence")
    assert (done.content, done.route, done.provider, done.escalation_reason) == (
        "The answer is 42.", "cloud", "openai", "low confidence",
    )


def test_a_with_block_left_without_finish_keeps_the_text_as_interrupted_or_error(store, question):
    with store.begin_reply(question.conversation_id, question.id) as cancelled:
        cancelled.append("Half a")
    with pytest.raises(RuntimeError), store.begin_reply(question.conversation_id, question.id) as failed:
        failed.append("Some")
        raise RuntimeError("provider went away")

    statuses = {m.id: (m.status, m.content) for m in store.messages(question.conversation_id)}
    assert statuses[cancelled.message_id] == ("interrupted", "Half a")
    assert statuses[failed.message_id] == ("error", "Some")


def test_closing_the_store_marks_its_unfinished_replies_interrupted(db_path):
    store = Store.open(db_path)
    conversation = store.create_conversation("Quit mid-reply")
    question = store.add_message(conversation.id, "user", "Long answer please")
    reply = store.begin_reply(conversation.id, question.id)
    reply.append("Here is the first part")
    store.close()

    assert raw_rows(db_path, "SELECT status, content FROM messages WHERE id = ?", reply.message_id) == [
        ("interrupted", "Here is the first part")
    ]


def test_start_up_marks_a_dead_writers_partial_reply_interrupted_but_not_a_live_ones(db_path):
    child = spawn_child("hold", str(db_path))
    try:
        line = child.stdout.readline()
        assert line.startswith("streaming"), child.stderr.read()
        reply_id = int(line.split()[1])

        with Store.open(db_path):
            # The writer is alive and may still finish: its reply stays partial.
            assert raw_rows(db_path, "SELECT status FROM messages WHERE id = ?", reply_id) == [("partial",)]
    finally:
        child.kill()
        child.wait()

    with Store.open(db_path) as store:
        reply = store.messages(store.list_conversations()[0].id)[-1]
    assert (reply.id, reply.status, reply.content) == (reply_id, "interrupted", "half an ans")


def test_a_checkpoint_blocked_by_another_writer_is_retried_and_the_stream_goes_on(db_path, clock):
    with Store.open(db_path, busy_timeout=0.05) as store:
        conversation = store.create_conversation("Busy")
        reply = store.begin_reply(conversation.id, clock=clock)
        observer = Observer(db_path)
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")

        clock.advance(300)
        reply.append("written while the file is busy")
        assert observer.content(reply.message_id) == ""

        other.execute("ROLLBACK")
        clock.advance(300)
        reply.append(", then saved")
        assert observer.content(reply.message_id) == "written while the file is busy, then saved"


def test_a_reply_whose_conversation_was_deleted_meanwhile_says_so(store, question):
    reply = store.begin_reply(question.conversation_id, question.id)
    reply.append("about to vanish")
    store.delete_conversation(question.conversation_id)
    with pytest.raises(MessageNotFound, match=f"no message {reply.message_id}"):
        reply.finish("complete")
    store.close()  # and closing the store does not trip over it
