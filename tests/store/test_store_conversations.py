"""Conversations and messages: what is written is committed at once, listed newest first,
editable, and really gone once deleted; "don't keep" conversations do not outlive their process."""

from __future__ import annotations

import pytest
from store_helpers import raw_rows, spawn_child

from app.store import ConversationNotFound, MessageNotFound, Store


def test_a_new_conversation_starts_private_and_kept(store):
    conversation = store.create_conversation("Plans")
    assert (conversation.cloud_opt_in, conversation.local_only, conversation.ephemeral) == (False, False, False)
    assert store.get_conversation(conversation.id) == conversation


def test_a_message_is_committed_before_add_message_returns(store, db_path):
    conversation = store.create_conversation("Plans")
    message = store.add_message(conversation.id, "user", "What should I cook tonight?")

    # Another connection, as another process would, sees it without the store doing anything more.
    assert raw_rows(db_path, "SELECT role, content, status FROM messages WHERE id = ?", message.id) == [
        ("user", "What should I cook tonight?", "complete")
    ]


def test_messages_keep_their_metadata_and_order(store):
    conversation = store.create_conversation("Plans")
    question = store.add_message(conversation.id, "user", "Q")
    answer = store.add_message(
        conversation.id, "assistant", "A", parent_id=question.id, route="cloud", model="gpt",
        provider="openai", tokens_in=12, tokens_out=3, ttft_ms=210.5, tok_s=41.0, confidence=0.31,
        escalation_reason="low confidence",
    )
    assert store.messages(conversation.id) == [question, answer]
    assert (answer.route, answer.parent_id, answer.tokens_in, answer.escalation_reason) == (
        "cloud", question.id, 12, "low confidence",
    )


def test_listing_puts_the_most_recently_active_first_and_hides_archived(store):
    first = store.create_conversation("first")
    second = store.create_conversation("second")
    third = store.create_conversation("third")
    store.add_message(first.id, "user", "back to the first one")
    store.update_conversation(third.id, archived=True)

    assert [c.title for c in store.list_conversations()] == ["first", "second"]
    assert [c.title for c in store.list_conversations(include_archived=True, limit=2)] == ["first", "third"]
    assert second.id in [c.id for c in store.list_conversations(include_archived=True)]


def test_updating_changes_only_the_named_fields(store):
    conversation = store.create_conversation("Untitled")
    updated = store.update_conversation(conversation.id, title="Trip to Lisbon", cloud_opt_in=True, model="nano")
    assert (updated.title, updated.cloud_opt_in, updated.local_only, updated.model) == (
        "Trip to Lisbon", True, False, "nano",
    )
    with pytest.raises(ValueError, match="cannot edit created"):
        store.update_conversation(conversation.id, created="yesterday")


def test_deleting_removes_the_conversation_and_all_its_messages(store, db_path):
    kept = store.create_conversation("kept")
    store.add_message(kept.id, "user", "stay")
    doomed = store.create_conversation("doomed")
    question = store.add_message(doomed.id, "user", "go")
    store.add_message(doomed.id, "assistant", "gone", parent_id=question.id)

    store.delete_conversation(doomed.id)

    with pytest.raises(ConversationNotFound, match=f"no conversation {doomed.id}"):
        store.get_conversation(doomed.id)
    assert raw_rows(db_path, "SELECT content FROM messages") == [("stay",)]


def test_unknown_conversations_and_bad_values_are_refused(store):
    with pytest.raises(ConversationNotFound):
        store.add_message(404, "user", "anyone?")
    with pytest.raises(ConversationNotFound):
        store.messages(404)
    conversation = store.create_conversation("x")
    with pytest.raises(ValueError, match="role 'robot'"):
        store.add_message(conversation.id, "robot", "beep")
    with pytest.raises(ValueError, match="route 'moon'"):
        store.add_message(conversation.id, "assistant", "hi", route="moon")
    with pytest.raises(MessageNotFound, match="no message 77"):
        store.add_message(conversation.id, "assistant", "hi", parent_id=77)
    with pytest.raises(ValueError, match="unknown message fields colour"):
        store.add_message(conversation.id, "assistant", "hi", colour="red")


def test_dont_keep_conversations_are_deleted_when_the_store_closes(db_path):
    with Store.open(db_path) as store:
        secret = store.create_conversation("secret", ephemeral=True)
        store.add_message(secret.id, "user", "forget me")
        kept = store.create_conversation("kept")
        unkept = store.create_conversation("changed my mind", ephemeral=True)
        store.update_conversation(unkept.id, ephemeral=False)

    with Store.open(db_path) as store:
        assert sorted(c.title for c in store.list_conversations()) == ["changed my mind", "kept"]
        assert store.search("forget") == []
        assert kept.id in [c.id for c in store.list_conversations()]


def test_another_live_processs_dont_keep_conversation_outlives_our_open_but_not_its_owner(db_path):
    child = spawn_child("hold", str(db_path), "ephemeral")
    try:
        assert child.stdout.readline().startswith("streaming"), child.stderr.read()
        with Store.open(db_path) as store:
            assert [c.title for c in store.list_conversations()] == ["held"]
    finally:
        child.kill()
        child.wait()

    with Store.open(db_path) as store:
        assert store.list_conversations() == []


def test_a_deleted_conversations_text_is_gone_from_the_file_after_vacuum(store, db_path):
    conversation = store.create_conversation("Diary")
    store.add_message(conversation.id, "user", "my secret is Xylophone-Quokka-42")

    store.delete_conversation(conversation.id)
    store.vacuum()

    files = b"".join(p.read_bytes() for p in db_path.parent.iterdir())
    assert b"Xylophone" not in files and b"xylophone" not in files
