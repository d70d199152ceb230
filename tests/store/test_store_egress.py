"""The egress ledger and settings: every request that left is recorded with its payload or only
its hash and size, as the user chose, and survives its conversation's deletion without content."""

from __future__ import annotations

import hashlib

import pytest

from app.store import ConversationNotFound, Store
from app.store.egress import KEEP_PAYLOAD_SETTING
from offload.events import Egress
from offload.outgoing import Exchange, OutgoingRequest

PAYLOAD = '{"messages": [{"role": "user", "content": "Mail [EMAIL_1] about the invoice"}]}'


def send(store, conversation_id, payload=PAYLOAD):
    request = OutgoingRequest("openai", "api.openai.com", payload)
    return store.record_egress(Egress(Exchange(request, 812, 1290), redactions={"EMAIL": 1}), conversation_id=conversation_id)


def test_a_request_is_recorded_with_its_exact_payload_by_default(store):
    conversation = store.create_conversation("Invoice")
    record = send(store, conversation.id)

    assert store.egress(conversation.id) == [record]
    assert (record.payload, record.host, record.bytes_sent, record.bytes_received, dict(record.redactions)) == (
        PAYLOAD, "api.openai.com", 812, 1290, {"EMAIL": 1},
    )
    assert record.payload_sha256 == hashlib.sha256(PAYLOAD.encode()).hexdigest()
    assert record.payload_bytes == len(PAYLOAD.encode())


def test_with_payloads_off_only_the_hash_and_size_are_kept(store, db_path):
    store.set_setting(KEEP_PAYLOAD_SETTING, False)
    record = send(store, None)

    assert record.payload is None
    assert record.payload_sha256 == hashlib.sha256(PAYLOAD.encode()).hexdigest()
    assert PAYLOAD.encode() not in db_path.read_bytes() + db_path.with_name("tandem.db-wal").read_bytes()


def test_the_ledger_lists_newest_first_and_filters_by_conversation(store):
    first = store.create_conversation("first")
    second = store.create_conversation("second")
    a, b, c = send(store, first.id, "a"), send(store, second.id, "b"), send(store, None, "c")

    assert store.egress() == [c, b, a]
    assert store.egress(first.id) == [a]
    with pytest.raises(ConversationNotFound):
        send(store, 999)


def test_deleting_a_conversation_keeps_that_bytes_left_but_not_what_or_from_where(store):
    conversation = store.create_conversation("Invoice")
    record = send(store, conversation.id)

    store.delete_conversation(conversation.id)

    (kept,) = store.egress()
    assert (kept.conversation_id, kept.payload) == (None, None)
    assert (kept.payload_sha256, kept.bytes_sent, kept.host) == (record.payload_sha256, 812, "api.openai.com")


def test_settings_hold_json_values_across_reopening(db_path):
    with Store.open(db_path) as store:
        assert store.get_setting("privacy", {"mode": "ask"}) == {"mode": "ask"}
        store.set_setting("privacy", {"mode": "auto", "terms": ["ACME"], "context_turns": 4})
        store.set_setting("theme", "dark")
        store.set_setting("theme", "light")
        with pytest.raises(TypeError):
            store.set_setting("bad", object())
    with Store.open(db_path) as store:
        assert store.get_setting("privacy") == {"mode": "auto", "terms": ["ACME"], "context_turns": 4}
        assert store.get_setting("theme") == "light"
        assert store.get_setting("bad") is None
