"""The turn runner the TUI and the CLI share, on a real store: what it saves, when, and how."""

from __future__ import annotations

import threading

import pytest
from app_helpers import ScriptedRouter, cloud_reply, local_reply

from app.turns import NEW_TITLE, TurnError, TurnRunner, title_from
from offload.events import Token, TurnDone
from offload.router import Preview


def test_the_users_message_is_committed_before_the_router_runs(store, db_path):
    conversation = store.create_conversation(title="t")
    seen: list[list[str]] = []

    class Peeking(ScriptedRouter):
        def run(self, turn, approve=None, cancel=None):
            from app.store import Store

            with Store.open(db_path) as other:  # another connection sees it: it is committed
                seen.append([(m.role, m.content) for m in other.messages(conversation.id) if m.role == "user"])
            yield from super().run(turn, approve, cancel)

    TurnRunner(store, Peeking(local_reply())).run(conversation.id, "What is the capital of France?")
    assert seen == [[("user", "What is the capital of France?")]]


def test_a_local_reply_is_stored_with_its_route_and_figures(store):
    conversation = store.create_conversation(title="t")
    result = TurnRunner(store, ScriptedRouter(local_reply("Paris."))).run(conversation.id, "capital?")
    user, reply = store.messages(conversation.id)
    assert (user.role, user.content) == ("user", "capital?")
    assert reply.parent_id == user.id
    assert (reply.role, reply.content, reply.status) == ("assistant", "Paris. ", "complete")
    assert (reply.route, reply.model, reply.provider) == ("local", "tandem-nano", "tvm")
    assert reply.confidence == pytest.approx(0.93)
    assert reply.tok_s == pytest.approx(41.5)
    assert reply.escalation_reason == "confident local answer"
    assert (result.reply, result.route, result.status) == ("Paris. ", "local", "complete")


def test_an_escalated_reply_replaces_the_local_draft_and_records_egress(store):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    events: list = []
    result = TurnRunner(store, ScriptedRouter(cloud_reply("From the cloud."))).run(
        conversation.id, "hard question", on_event=events.append
    )
    reply = store.messages(conversation.id)[-1]
    assert reply.content == "From the cloud."
    assert (reply.route, reply.provider, reply.model) == ("cloud", "openai", "gpt-4o-mini")
    assert reply.escalation_reason == "escalated: low local confidence (0.21)"
    [egress] = store.egress()
    assert (egress.conversation_id, egress.host, egress.bytes_sent) == (conversation.id, "api.openai.com", 64)
    assert egress.payload == '{"messages": [{"content": "mail [EMAIL_1]"}]}'
    assert dict(egress.redactions) == {"EMAIL": 1}
    assert result.notices == ["local draft withdrawn: low local confidence (0.21)"]
    assert len(events) == len(cloud_reply())


def test_the_router_sees_the_history_and_the_conversation_policy(store):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    router = ScriptedRouter(local_reply("one"))
    runner = TurnRunner(store, router)
    runner.run(conversation.id, "first")
    runner.run(conversation.id, "/cloud second")
    turn = router.turns[-1]
    assert [m["content"] for m in turn.messages] == ["first", "one ", "second"]
    assert turn.policy.cloud_opt_in is True and turn.force == "cloud"


def test_a_failing_turn_keeps_the_question_and_marks_the_reply_error(store):
    conversation = store.create_conversation(title="t")

    class Failing(ScriptedRouter):
        def run(self, turn, approve=None, cancel=None):
            yield Token("half ", "local")
            raise RuntimeError("device lost")

    with pytest.raises(TurnError, match="your message is saved"):
        TurnRunner(store, Failing()).run(conversation.id, "question")
    user, reply = store.messages(conversation.id)
    assert user.content == "question"
    assert (reply.status, reply.content) == ("error", "half ")


def test_a_cancelled_turn_is_stored_as_interrupted(store):
    conversation = store.create_conversation(title="t")
    cancel = threading.Event()
    cancel.set()
    result = TurnRunner(store, ScriptedRouter(wait_for_cancel=True)).run(conversation.id, "go", cancel=cancel)
    assert result.status == "interrupted"
    assert store.messages(conversation.id)[-1].status == "interrupted"


def test_approve_is_asked_with_the_preview_and_its_answer_decides(store):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    preview = Preview("openai", "api.openai.com", "payload")
    router = ScriptedRouter(cloud_reply(), preview=preview, declined=local_reply("kept"))
    asked: list[Preview] = []
    result = TurnRunner(store, router).run(conversation.id, "q", approve=lambda p: asked.append(p) or False)
    assert asked == [preview] and result.route == "local" and store.egress() == []


def test_a_new_conversation_is_titled_from_its_first_message(store):
    conversation = store.create_conversation(title=NEW_TITLE)
    TurnRunner(store, ScriptedRouter(local_reply())).run(conversation.id, "How do I reverse a list?\nmore")
    assert store.get_conversation(conversation.id).title == "How do I reverse a list?"


def test_an_empty_forced_message_is_refused(store):
    conversation = store.create_conversation(title="t")
    with pytest.raises(TurnError, match="empty"):
        TurnRunner(store, ScriptedRouter()).run(conversation.id, "/cloud")
    assert store.messages(conversation.id) == []


def test_title_from_cuts_at_a_word():
    assert title_from("word " * 30).endswith("…") and len(title_from("word " * 30)) <= 49
    assert title_from("  ") == NEW_TITLE


def test_turn_done_is_the_last_event_the_runner_passes_on(store):
    conversation = store.create_conversation(title="t")
    events: list = []
    TurnRunner(store, ScriptedRouter(local_reply())).run(conversation.id, "q", on_event=events.append)
    assert isinstance(events[-1], TurnDone)


def test_the_default_router_escalates_to_the_chosen_provider_at_the_chosen_threshold():
    from app.settings import ProviderSettings, UserSettings
    from app.turns import default_router_factory

    settings = UserSettings(
        providers=(ProviderSettings("onprem", "openai-compatible", "http://127.0.0.1:9/v1", "llama-70b"),),
        provider="onprem",
        escalate_below=0.3,
    )
    router = default_router_factory(None, settings, offline=False)
    assert (router.provider.name, router.cloud_model) == ("onprem", "llama-70b")
    assert router.threshold.risk == pytest.approx(0.7)
    assert router.settings.mode == "ask"
    assert default_router_factory(None, settings, offline=True).settings.mode == "offline"
