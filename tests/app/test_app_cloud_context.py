"""The cloud's share of a conversation: what a cloud request carries under each context policy,
on a real store, the real router over the embedded model, and a real cloud on 127.0.0.1; the
refusals and pre-opt-in turns that never leave; dropping earlier turns in the ask-mode preview;
and what the egress ledger records."""

from __future__ import annotations

import dataclasses
import json

import pytest
from app_helpers import SIZE, until_ready

from app.settings import save_settings
from app.tui.screens.approve import ApproveScreen
from app.turns import TurnRunner, default_router_factory
from offload.router import Approval, Preview

REFUSAL = "I can't answer that here: it needs a bigger model."


def runner(store, engine, settings, mode: str = "auto", **changes) -> TurnRunner:
    """A turn runner whose local model answers greedily, so what it refuses does not vary by run."""
    from app.settings import SamplingOverride

    settings = dataclasses.replace(settings, mode=mode, **changes)
    settings = settings.with_sampling(engine.info.model_id, SamplingOverride(temperature=0.0))
    return TurnRunner(store, default_router_factory(engine, settings, offline=False))


def sent_contents(body: str) -> list[str]:
    return [m["content"] for m in json.loads(body)["messages"]]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("message", ["what is the capital of Italy?"]),
        ("recent", ["How do I search my history?", "{a1}", "what is the capital of Italy?"]),
        ("whole", ["What is Tandem?", "{a0}", "How do I search my history?", "{a1}", "what is the capital of Italy?"]),
    ],
)
def test_each_policy_sends_exactly_its_messages(store, nano_engine, loopback_cloud, cloud_settings, policy, expected):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    turns = runner(store, nano_engine, cloud_settings, context_turns=1, context_policy=policy)
    answers = [turns.run(conversation.id, q, force="local").reply for q in ("What is Tandem?", "How do I search my history?")]
    turns.run(conversation.id, "/cloud what is the capital of Italy?")
    [body] = loopback_cloud.bodies
    wanted = [e.format(a0=answers[0], a1=answers[1]) for e in expected]
    assert sent_contents(body) == wanted
    [egress] = store.egress()
    assert (egress.context_policy, egress.context_messages) == (policy, len(wanted) - 1)
    reply = store.messages(conversation.id)[-1]
    assert reply.route == "cloud" and "sent " in reply.escalation_reason  # the route label names it


def test_refusals_and_turns_from_before_the_opt_in_stay_home(store, nano_engine, loopback_cloud, cloud_settings):
    conversation = store.create_conversation(title="t")
    turns = runner(store, nano_engine, cloud_settings, context_policy="whole")
    refused = turns.run(conversation.id, "What is the capital of Peru?")  # not opted in: kept local
    assert refused.reply == REFUSAL and store.messages(conversation.id)[-1].refusal
    before = turns.run(conversation.id, "What is Tandem?").reply
    store.update_conversation(conversation.id, cloud_opt_in=True)
    after = turns.run(conversation.id, "How do I search my history?", force="local").reply

    turns.run(conversation.id, "/cloud and of Chile?")  # whole: everything but the refusal
    recent = runner(store, nano_engine, cloud_settings, context_policy="recent", context_turns=5)
    recent.run(conversation.id, "/cloud and of Bolivia?")  # recent: only what followed the opt-in

    whole_body, recent_body = loopback_cloud.bodies
    for body in loopback_cloud.bodies:
        assert REFUSAL not in body and "Peru" not in body
    assert sent_contents(whole_body) == [
        "What is Tandem?", before, "How do I search my history?", after, "and of Chile?"
    ]
    cloud_reply = store.messages(conversation.id)[-1 - 2].content  # the cloud's answer to "and of Chile?"
    assert sent_contents(recent_body) == [
        "How do I search my history?", after, "and of Chile?", cloud_reply, "and of Bolivia?"
    ]


def test_dropping_earlier_turns_in_the_preview_changes_what_leaves_and_the_ledger_matches(
    store, nano_engine, loopback_cloud, cloud_settings
):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    turns = runner(store, nano_engine, cloud_settings, mode="ask", context_policy="whole")
    turns.run(conversation.id, "What is Tandem?", force="local")
    asked: list[Preview] = []
    turns.run(conversation.id, "/cloud capital of Italy?", approve=lambda p: asked.append(p) or Approval.SEND_ALONE)

    [preview] = asked
    answer = store.messages(conversation.id)[1].content
    assert preview.earlier[0] == "user: What is Tandem?" and len(preview.earlier) == 2
    assert preview.earlier[1].startswith("assistant: " + answer[:40])
    assert sent_contents(preview.payload)[-1] == "capital of Italy?" and len(sent_contents(preview.payload)) == 3
    [body] = loopback_cloud.bodies
    assert body == preview.alone_payload and sent_contents(body) == ["capital of Italy?"]
    assert len(body.encode()) < len(preview.payload.encode())
    [egress] = store.egress()
    assert egress.payload == body and egress.payload_bytes == len(body.encode())
    assert (egress.context_policy, egress.context_messages) == ("whole", 0)


def test_with_nothing_earlier_the_preview_offers_nothing_to_drop(store, nano_engine, loopback_cloud, cloud_settings):
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    asked: list[Preview] = []
    runner(store, nano_engine, cloud_settings, mode="ask").run(
        conversation.id, "/cloud capital of Italy?", approve=lambda p: asked.append(p) or True
    )
    assert asked[0].alone_payload is None and asked[0].earlier == ()


@pytest.mark.anyio
async def test_the_approval_dialog_drops_earlier_turns_with_one_key(nano_app, store, loopback_cloud, cloud_settings):
    save_settings(store, dataclasses.replace(cloud_settings, context_policy="whole"))
    conversation = store.create_conversation(title="t", cloud_opt_in=True)
    store.add_message(conversation.id, "user", "an earlier question")
    store.add_message(conversation.id, "assistant", "an earlier answer", route="local")
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await until_ready(pilot)
        await pilot.press(*"/cloud capital of Italy?", "enter")
        for _ in range(300):
            if isinstance(app.screen, ApproveScreen):
                break
            await pilot.pause(0.02)
        screen = app.screen
        assert isinstance(screen, ApproveScreen)
        assert "an earlier question" in str(screen.query_one("#context").render())
        full = screen.query_one("#payload").text
        size_before = str(screen.query_one("#size").render())
        await pilot.press("ctrl+d")
        alone = screen.query_one("#payload").text
        assert sent_contents(alone) == ["capital of Italy?"] and "earlier question" in full
        assert str(screen.query_one("#size").render()) != size_before
        assert f"{len(alone.encode())} bytes" in str(screen.query_one("#size").render())
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert loopback_cloud.bodies == [alone]
    [egress] = store.egress()
    assert egress.payload == alone and egress.context_messages == 0


@pytest.mark.anyio
async def test_f4_cycles_this_conversations_context_and_the_header_shows_it(make_app, store):
    conversation = store.create_conversation(title="t")
    async with make_app().run_test(size=SIZE) as pilot:
        header = pilot.app.chat.query_one("#header")
        assert "sends: last 2 (F4)" in str(header.render())  # the settings' default
        seen = []
        for _ in range(3):
            await pilot.press("f4")
            seen.append((store.get_conversation(conversation.id).cloud_context, str(header.render())))
        assert [policy for policy, _ in seen] == ["whole", "message", "recent"]
        assert "sends: everything" in seen[0][1] and "sends: this message" in seen[1][1]
