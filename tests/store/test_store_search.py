"""Full-text search: ranked hits with snippets, any user input accepted as words, and an index
that follows every insert, checkpoint, deletion and vacuum."""

from __future__ import annotations

import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import raw_rows

from app.store import search
from app.store.search import MARK_CLOSE, MARK_OPEN, fts_query


def fts_is_consistent(db_path) -> bool:
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")
        return True
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def test_hits_come_best_match_first_with_the_matched_words_marked(store):
    pasta = store.create_conversation("Pasta")
    travel = store.create_conversation("Travel")
    passing = store.add_message(travel.id, "user", "We walked for hours through the old town, " * 5 + "and ate pasta.")
    focused = store.add_message(pasta.id, "user", "Pasta: how long do I boil fresh pasta?")
    store.add_message(pasta.id, "assistant", "Two to three minutes in salted water.")

    hits = store.search("pasta")

    assert [h.message_id for h in hits] == [focused.id, passing.id]
    assert hits[0].rank < hits[1].rank
    assert (hits[0].title, hits[0].role, hits[0].conversation_id) == ("Pasta", "user", pasta.id)
    assert f"{MARK_OPEN}Pasta{MARK_CLOSE}" in hits[0].snippet
    assert hits[1].snippet.startswith("…") and f"{MARK_OPEN}pasta{MARK_CLOSE}" in hits[1].snippet


def test_every_word_must_match_the_last_as_a_prefix_and_stems_and_accents_fold(store):
    conversation = store.create_conversation("Cafe")
    both = store.add_message(conversation.id, "user", "The café was baking croissants")
    store.add_message(conversation.id, "user", "The café was closed")

    assert [h.message_id for h in store.search("cafe bake croiss")] == [both.id]
    assert [h.message_id for h in store.search("baked")] == [both.id]
    assert store.search("cafe tea") == []


def test_fts_syntax_typed_by_the_user_is_searched_as_words():
    assert fts_query('NEAR(a b) OR "x" -y col:z*') == '"NEAR(a" "b)" "OR" """x""" "-y" "col:z*"*'
    assert fts_query("python er") == '"python" "er"'
    assert fts_query("  ") is None
    assert fts_query("-- ** ()") is None


def test_when_very_many_messages_match_the_newest_are_ranked(store, monkeypatch):
    conversation = store.create_conversation("Tea")
    best_but_old = store.add_message(conversation.id, "user", "tea tea tea")
    newer = [store.add_message(conversation.id, "user", f"some tea, note {n} with more words") for n in range(4)]
    assert store.search("tea")[0].message_id == best_but_old.id

    monkeypatch.setattr(search, "RANK_WINDOW", 3)
    assert {h.message_id for h in store.search("tea")} == {m.id for m in newer[-3:]}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=40))
def test_no_user_input_makes_search_fail(store, query):
    conversation = store.create_conversation("Anything")
    store.add_message(conversation.id, "user", "plain words, AND some NEAR syntax \"quoted\" (parens)")
    assert isinstance(store.search(query), list)


def test_a_streamed_reply_is_found_once_checkpointed(store, clock):
    conversation = store.create_conversation("Stream")
    reply = store.begin_reply(conversation.id, clock=clock)
    reply.append("photosynthesis explained")
    clock.advance(300)
    reply.append(" simply")
    assert [h.message_id for h in store.search("photosynthesis")] == [reply.message_id]
    reply.finish("complete")
    assert [h.message_id for h in store.search("simply")] == [reply.message_id]


def test_deleting_a_conversation_removes_its_rows_from_the_index(store, db_path):
    kept = store.create_conversation("kept")
    store.add_message(kept.id, "user", "zebra crossing")
    doomed = store.create_conversation("doomed")
    store.add_message(doomed.id, "user", "zebra stripes")
    store.add_message(doomed.id, "assistant", "zebra facts")

    store.delete_conversation(doomed.id)

    assert [h.conversation_id for h in store.search("zebra")] == [kept.id]
    # The index itself holds one entry per remaining message, and agrees with the table.
    assert raw_rows(db_path, "SELECT count(*) FROM messages_fts_docsize") == [(1,)]
    assert fts_is_consistent(db_path)


def test_hits_still_point_at_the_right_messages_after_vacuum(store, db_path):
    conversations = [store.create_conversation(f"c{n}") for n in range(30)]
    messages = [store.add_message(c.id, "user", f"note number {c.id} about kiwis") for c in conversations]
    for conversation in conversations[::2]:
        store.delete_conversation(conversation.id)

    store.vacuum()

    expected = {m.id: m.content for m in messages[1::2]}
    hits = store.search("kiwis", limit=100)
    assert {h.message_id for h in hits} == set(expected)
    for hit in hits:
        assert hit.snippet.replace(MARK_OPEN, "").replace(MARK_CLOSE, "") == expected[hit.message_id]
    assert fts_is_consistent(db_path)
    assert store.integrity_check() == ["ok"]
