"""Export and import: Markdown and JSON (OpenAI messages plus Tandem's metadata), a JSON round trip
that gives equal content, and import files refused whole with a message naming the problem."""

from __future__ import annotations

import json

import pytest

from app.store import ImportFileError, Store


@pytest.fixture
def filled(store):
    """Two conversations with everything a message and a conversation can carry."""
    trip = store.create_conversation("Trip to Lisbon", cloud_opt_in=True, model="nano")
    question = store.add_message(trip.id, "user", "Where should I eat?\n\n- cheap\n- near the river")
    store.add_message(trip.id, "assistant", "Try the **Time Out** market.", parent_id=question.id,
                      route="local", model="nano", provider="mlc", tokens_in=20, tokens_out=7,
                      ttft_ms=95.5, tok_s=48.25, confidence=0.91)
    retry = store.begin_reply(trip.id, question.id, route="cloud", model="gpt", provider="openai")
    retry.append("Cervejaria Ramiro, ")
    retry.finish("interrupted", escalation_reason="low confidence", tokens_out=4)
    code = store.create_conversation("Rust lifetimes", local_only=True)
    store.add_message(code.id, "system", "Be brief.")
    store.add_message(code.id, "user", "what's 'a?")
    store.update_conversation(code.id, archived=True)
    store.create_conversation("not kept", ephemeral=True)
    return store


def without_ids(document: dict) -> dict:
    """An export with ids replaced by positions: ids are the database's, the content is the user's."""
    document = json.loads(json.dumps(document))
    document.pop("exported")
    for conversation in document["conversations"]:
        positions = {m["tandem"]["id"]: n for n, m in enumerate(conversation["messages"])}
        conversation.pop("id")
        for message in conversation["messages"]:
            tandem = message["tandem"]
            tandem["id"] = positions[tandem["id"]]
            tandem["parent_id"] = positions.get(tandem["parent_id"])
    return document


def test_json_is_openai_messages_with_tandem_metadata(filled):
    document = filled.export_json()
    assert document["format"] == "tandem-history"
    assert [c["title"] for c in document["conversations"]] == ["Trip to Lisbon", "Rust lifetimes"]
    answer = document["conversations"][0]["messages"][1]
    assert {k: answer[k] for k in ("role", "content")} == {"role": "assistant", "content": "Try the **Time Out** market."}
    assert answer["tandem"]["route"] == "local" and answer["tandem"]["tok_s"] == 48.25


def test_json_round_trip_into_another_database_gives_equal_content(filled, tmp_path):
    exported = filled.export_json()

    with Store.open(tmp_path / "other.db") as other:
        other.create_conversation("already there")
        imported = other.import_json(json.dumps(exported)).added
        again = {**other.export_json(), "conversations": [
            c for c in other.export_json()["conversations"] if c["title"] != "already there"
        ]}

    assert [c.title for c in imported] == ["Trip to Lisbon", "Rust lifetimes"]
    assert without_ids(again) == without_ids(exported)


def test_importing_the_same_file_twice_adds_its_conversations_once(filled, tmp_path):
    text = json.dumps(filled.export_json())
    with Store.open(tmp_path / "other.db") as other:
        first = other.import_json(text)
        second = other.import_json(text)
        titles = [c.title for c in other.list_conversations(include_archived=True)]

    assert (len(first.added), first.skipped) == (2, 0)
    assert (second.added, second.skipped) == ([], 2)
    assert sorted(titles) == ["Rust lifetimes", "Trip to Lisbon"]


def test_a_conversation_with_other_messages_is_not_taken_for_a_copy(filled, tmp_path):
    document = filled.export_json()
    with Store.open(tmp_path / "other.db") as other:
        other.import_json(json.dumps(document))
        document["conversations"][0]["messages"][0]["content"] += " (edited)"
        again = other.import_json(json.dumps(document))

    assert [c.title for c in again.added] == ["Trip to Lisbon"] and again.skipped == 1


def test_markdown_round_trips_through_json_unchanged_and_reads_well(filled, tmp_path):
    markdown = filled.export_markdown()
    with Store.open(tmp_path / "other.db") as other:
        other.import_json(json.dumps(filled.export_json()))
        assert other.export_markdown() == markdown

    assert markdown.startswith("# Trip to Lisbon\n")
    assert "cloud opt-in on" in markdown and "local only" in markdown and "archived" in markdown
    assert "## Assistant · " in markdown and "· cloud · gpt · 4 tokens · escalated: low confidence · interrupted" in markdown
    assert "not kept" not in markdown


def test_one_conversation_exports_alone(filled):
    (trip,) = [c for c in filled.list_conversations() if c.title == "Trip to Lisbon"]
    assert [c["title"] for c in filled.export_json(trip.id)["conversations"]] == ["Trip to Lisbon"]
    assert "Rust lifetimes" not in filled.export_markdown(trip.id)


def test_plain_openai_messages_import_with_defaults(store):
    document = {"conversations": [{"title": "From elsewhere", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]},
    ]}]}
    (conversation,) = store.import_json(json.dumps(document)).added
    assert [(m.role, m.content, m.status) for m in store.messages(conversation.id)] == [
        ("user", "hi", "complete"), ("assistant", "hello there", "complete"),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not valid JSON"),
        ("[]", "the file: should be a JSON object"),
        ('{"format": "chatgpt", "conversations": []}', "format is 'chatgpt'"),
        ('{"version": 9, "conversations": []}', "version 9 is newer"),
        ('{"conversations": [{"messages": [{"role": "robot", "content": "x"}]}]}', "conversation 1, message 1: role 'robot'"),
        ('{"conversations": [{"messages": [{"role": "user", "content": 5}]}]}', "content should be a string"),
        ('{"conversations": [{"created": "yesterday"}]}', "conversation 1, 'created': should be an ISO-8601 time"),
        ('{"conversations": [{"messages": [{"role": "user", "content": "x", "tandem": {"parent_id": 7}}]}]}',
         "parent_id 7 names no earlier message"),
        ('{"conversations": [{"messages": [{"role": "user", "content": "x", "tandem": {"tokens_in": "many"}}]}]}',
         "'tokens_in': should be int"),
    ],
)
def test_a_bad_import_file_is_refused_with_the_problem_named(store, text, problem):
    with pytest.raises(ImportFileError) as caught:
        store.import_json(text, source="chats.json")
    assert problem in str(caught.value) and "chats.json" in str(caught.value)


def test_an_import_file_with_one_bad_conversation_adds_none_of_them(store):
    store.create_conversation("existing")
    document = {"conversations": [
        {"title": "fine", "messages": [{"role": "user", "content": "ok"}]},
        {"title": "broken", "messages": [{"role": "user", "content": "ok"}, {"role": "user"}]},
    ]}
    with pytest.raises(ImportFileError, match="conversation 2, message 2"):
        store.import_json(json.dumps(document))
    assert [c.title for c in store.list_conversations()] == ["existing"]
