"""The chat pane driven through Pilot: sending, streaming, where each reply ran, escalation, ask-mode
approval, a failing cloud, cancelling and copying. The real router runs the real engine on the
embedded model; the cloud is a real OpenAI-compatible server on 127.0.0.1. tandem-nano answers
Tandem questions and refuses the rest, which is what makes the router escalate."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from app_helpers import SIZE

from app.settings import save_settings
from app.tui.screens.approve import ApproveScreen
from app.tui.widgets.message import MessageView
from app.tui.widgets.prompt import PromptInput
from app.turns import default_router_factory

pytestmark = pytest.mark.anyio

OUT_OF_DOMAIN = "What is the capital of France?"
REFUSED = "the local model says this needs a bigger model"


async def settle(pilot, app) -> None:
    """Wait for the start-up and turn workers to finish."""
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def send(pilot, text: str) -> None:
    await pilot.press(*text)
    await pilot.press("enter")


async def until_approval(pilot) -> ApproveScreen:
    for _ in range(300):
        if isinstance(pilot.app.screen, ApproveScreen):
            break
        await pilot.pause(0.02)
    assert isinstance(pilot.app.screen, ApproveScreen)
    return pilot.app.screen


async def until_streaming(pilot) -> None:
    """Wait until the reply shows its first token."""
    chat = pilot.app.chat
    for _ in range(400):
        if chat.reply_view is not None and chat.reply_view.content:
            return
        await pilot.pause(0.01)
    raise AssertionError("the reply never started streaming")


def last_reply(app) -> MessageView:
    return list(app.screen.query(MessageView))[-1]


def auto_mode(store, settings) -> None:
    save_settings(store, dataclasses.replace(settings, mode="auto"))


async def test_enter_sends_and_the_reply_shows_where_it_ran(nano_app):
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert app.engine is not None
        await send(pilot, "What is Tandem?")
        await settle(pilot, app)
        user, reply = app.screen.query(MessageView)
        assert (user.role, user.content) == ("user", "What is Tandem?")
        assert "Tandem" in reply.content
        assert re.fullmatch(
            r"⌂ local · tandem-nano \(tvm\) · confidence 0\.\d\d · [\d.]+ tok/s · the local model is confident",
            reply.meta,
        ), reply.meta
        assert app.chat.query_one(PromptInput).text == ""
        stored = app.store.messages(app.chat.conversation_id)
        assert [(m.role, m.content) for m in stored] == [("user", "What is Tandem?"), ("assistant", reply.content)]
        assert (stored[-1].route, stored[-1].status) == ("local", "complete")


async def test_ctrl_j_makes_a_newline_instead_of_sending(nano_app):
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("h", "i", "ctrl+j", "b")
        assert app.chat.query_one(PromptInput).text == "hi\nb"
        assert list(app.screen.query(MessageView)) == []
        await pilot.press("enter")
        await settle(pilot, app)
        assert app.store.messages(app.chat.conversation_id)[0].content == "hi\nb"


async def test_an_escalated_reply_says_cloud_and_why_and_the_draft_is_withdrawn(
    nano_app, store, loopback_cloud, cloud_settings
):
    conversation = store.create_conversation(title="opted in", cloud_opt_in=True)
    auto_mode(store, cloud_settings)
    loopback_cloud.reply = "From the cloud."
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert app.chat.conversation_id == conversation.id
        await send(pilot, OUT_OF_DOMAIN)
        await settle(pilot, app)
        reply = last_reply(app)
        assert reply.content == "From the cloud."
        assert reply.meta.startswith("☁ cloud · loopback loopback-model")
        assert f"escalated: {REFUSED}" in reply.meta
        assert "local draft withdrawn" in str(reply.query_one(".notes").render())
        assert len(loopback_cloud.bodies) == 1 and OUT_OF_DOMAIN in loopback_cloud.bodies[0]


async def test_ask_mode_shows_the_exact_payload_and_destination_and_send_lets_it_leave(
    nano_app, store, loopback_cloud, cloud_settings
):
    store.create_conversation(title="opted in", cloud_opt_in=True)
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, "What is the capital of France? Mail ada@example.com")
        screen = await until_approval(pilot)
        host = loopback_cloud.base_url.split("//")[1].split("/")[0]
        assert host in str(screen.query_one("#destination").render())
        shown = screen.query_one("#payload").text
        assert "[EMAIL_1]" in shown and "ada@example.com" not in shown
        await pilot.click("#send")
        await settle(pilot, app)
        assert loopback_cloud.bodies == [shown]
        reply = last_reply(app)
        assert reply.meta.startswith("☁ cloud")
        assert reply.content == "I will write to ada@example.com today."  # the placeholder restored


async def test_ask_mode_keep_local_sends_nothing(nano_app, store, loopback_cloud, cloud_settings):
    store.create_conversation(title="opted in", cloud_opt_in=True)
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, OUT_OF_DOMAIN)
        await until_approval(pilot)
        await pilot.press("escape")
        await settle(pilot, app)
        assert loopback_cloud.bodies == [] and store.egress() == []
        reply = last_reply(app)
        assert reply.meta.startswith("⌂ local")
        assert "you declined" in reply.meta
        assert reply.content == "I can't answer that here: it needs a bigger model."


async def test_a_failing_cloud_is_noted_and_the_local_answer_stays(nano_app, store, loopback_cloud, cloud_settings):
    store.create_conversation(title="opted in", cloud_opt_in=True)
    auto_mode(store, cloud_settings)
    loopback_cloud.status = 500
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, OUT_OF_DOMAIN)
        await settle(pilot, app)
        reply = last_reply(app)
        assert loopback_cloud.bodies  # it was tried
        assert "The cloud failed" in str(reply.query_one(".notes").render())
        assert reply.meta.startswith("⌂ local") and "the cloud failed" in reply.meta
        assert reply.content == "I can't answer that here: it needs a bigger model."
        assert app.store.messages(app.chat.conversation_id)[-1].route == "local"


async def test_escape_cancels_a_streaming_reply(nano_app):
    app = nano_app(held=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, "Explain local-first software in detail.")
        await until_streaming(pilot)
        await pilot.press("escape")
        await settle(pilot, app)
        assert "interrupted" in last_reply(app).meta
        assert app.store.messages(app.chat.conversation_id)[-1].status == "interrupted"


async def test_copy_the_last_reply_a_message_and_its_code_blocks(nano_app, store, loopback_cloud, cloud_settings):
    text = "Use this:\n\n```python\nprint(1)\n```\n\nor\n\n```sh\necho 2\n```\n"
    loopback_cloud.reply = text  # tandem-nano writes no code: the cloud does
    store.create_conversation(title="opted in", cloud_opt_in=True)
    auto_mode(store, cloud_settings)
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, "code?")
        await settle(pilot, app)
        await pilot.press("ctrl+y")
        assert app.clipboard == text
        reply = last_reply(app)
        reply.focus()
        await pilot.press("b")
        assert app.clipboard == "print(1)\n"
        await pilot.press("b")
        assert app.clipboard == "echo 2\n"
        user = list(app.screen.query(MessageView))[0]
        user.focus()
        await pilot.press("c")
        assert app.clipboard == "code?"


async def test_a_message_waits_while_the_model_is_not_ready(make_app):
    app = make_app()  # no model loads
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        await pilot.pause()
        assert list(app.screen.query(MessageView)) == []
        assert app.chat.query_one(PromptInput).text == "hello"  # kept for when the model is ready


async def test_one_router_serves_the_turns_so_placeholders_stay_stable(nano_app, store, loopback_cloud, cloud_settings):
    store.create_conversation(title="opted in", cloud_opt_in=True)
    auto_mode(store, cloud_settings)
    built = []

    def factory(engine, settings, offline):
        built.append(settings.mode)
        return default_router_factory(engine, settings, offline)

    app = nano_app(make_router=factory)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        for text in ("Mail ada@example.com: what is the capital of France?", "And bob@example.com? What of Spain?"):
            await send(pilot, text)
            await settle(pilot, app)
        await pilot.press("ctrl+g")  # a new mode (auto -> offline): a new router
        await send(pilot, "hello")
        await settle(pilot, app)
        assert built == ["auto", "offline"]
        first, second = (json.loads(body)["messages"] for body in loopback_cloud.bodies)
        assert [m["content"] for m in second] == [  # ada stays [EMAIL_1] across the conversation's turns
            "Mail [EMAIL_1]: what is the capital of France?",
            "I will write to [EMAIL_1] today.",
            "And [EMAIL_2]? What of Spain?",
        ]
        assert first == second[:1]
        replies = [m for m in app.store.messages(app.chat.conversation_id) if m.role == "assistant"]
        assert [m.route for m in replies] == ["cloud", "cloud", "local"]


async def test_quitting_mid_reply_keeps_the_reply_as_interrupted(nano_app, db_path):
    from app.store import Store

    app = nano_app(held=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, "Explain local-first software in detail.")
        await until_streaming(pilot)
        await pilot.press("ctrl+q")
    with Store.open(db_path) as store:
        [conversation] = store.list_conversations()
        assert [(m.role, m.status) for m in store.messages(conversation.id)] == [
            ("user", "complete"),
            ("assistant", "interrupted"),
        ]
