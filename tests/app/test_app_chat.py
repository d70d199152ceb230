"""The chat pane driven through Pilot: sending, streaming, where each reply ran, ask-mode approval,
cancelling and copying. The router is the named ScriptedRouter stand-in (see conftest)."""

from __future__ import annotations

import pytest
from app_helpers import SIZE, ScriptedRouter, cloud_reply, local_reply

from app.tui.screens.approve import ApproveScreen
from app.tui.widgets.message import MessageView
from app.tui.widgets.prompt import PromptInput
from offload.router import Preview

pytestmark = pytest.mark.anyio


async def settle(pilot, app, seconds: float = 2.0) -> None:
    """Wait for the turn worker to finish."""
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def send(pilot, text: str) -> None:
    await pilot.press(*text)
    await pilot.press("enter")


async def test_enter_sends_and_the_reply_shows_where_it_ran(make_app):
    app = make_app(ScriptedRouter(local_reply("Paris is the capital.")))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, "capital of France?")
        await settle(pilot, app)
        user, reply = app.screen.query(MessageView)
        assert (user.role, user.content) == ("user", "capital of France?")
        assert reply.content == "Paris is the capital. "
        assert reply.meta == "⌂ local · tandem-nano (tvm) · confidence 0.93 · 41.5 tok/s · confident local answer"
        assert app.chat.query_one(PromptInput).text == ""
        stored = app.store.messages(app.chat.conversation_id)
        assert [m.role for m in stored] == ["user", "assistant"]


async def test_ctrl_j_makes_a_newline_instead_of_sending(make_app):
    router = ScriptedRouter(local_reply())
    app = make_app(router)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("a", "ctrl+j", "b")
        assert app.chat.query_one(PromptInput).text == "a\nb"
        assert router.turns == []
        await pilot.press("enter")
        await settle(pilot, app)
        assert router.turns[0].messages[-1]["content"] == "a\nb"


async def test_an_escalated_reply_says_cloud_and_why_and_the_draft_is_withdrawn(make_app, store):
    conversation = store.create_conversation(title="opted in", cloud_opt_in=True)
    app = make_app(ScriptedRouter(cloud_reply("From the cloud.")))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        assert app.chat.conversation_id == conversation.id
        await send(pilot, "hard question")
        await settle(pilot, app)
        reply = list(app.screen.query(MessageView))[-1]
        assert reply.content == "From the cloud."
        assert reply.meta.startswith("☁ cloud · openai gpt-4o-mini")
        assert "escalated: low local confidence (0.21)" in reply.meta
        assert "local draft withdrawn" in str(reply.query_one(".notes").render())


async def test_ask_mode_shows_the_exact_payload_and_destination_and_send_lets_it_leave(make_app, store):
    store.create_conversation(title="opted in", cloud_opt_in=True)
    preview = Preview("openai", "api.openai.com", '{"content": "call [PHONE_1]"}')
    router = ScriptedRouter(cloud_reply(), preview=preview, declined=local_reply())
    app = make_app(router)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, "call me")
        await pilot.pause(0.3)
        assert isinstance(app.screen, ApproveScreen)
        assert "api.openai.com" in str(app.screen.query_one("#destination").render())
        assert app.screen.query_one("#payload").text == '{"content": "call [PHONE_1]"}'
        await pilot.click("#send")
        await settle(pilot, app)
        assert router.approvals == [True]
        assert list(app.screen.query(MessageView))[-1].meta.startswith("☁ cloud")


async def test_ask_mode_keep_local_sends_nothing(make_app, store):
    store.create_conversation(title="opted in", cloud_opt_in=True)
    router = ScriptedRouter(cloud_reply(), preview=Preview("openai", "api.openai.com", "x"), declined=local_reply())
    app = make_app(router)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, "q")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await settle(pilot, app)
        assert router.approvals == [False]
        assert store.egress() == []
        assert list(app.screen.query(MessageView))[-1].meta.startswith("⌂ local")


async def test_escape_cancels_a_streaming_reply(make_app):
    router = ScriptedRouter(wait_for_cancel=True)
    app = make_app(router)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, "long answer please")
        await pilot.pause(0.2)
        assert router.started.wait(5)
        await pilot.press("escape")
        await settle(pilot, app)
        reply = list(app.screen.query(MessageView))[-1]
        assert "interrupted" in reply.meta
        assert app.store.messages(app.chat.conversation_id)[-1].status == "interrupted"


async def test_copy_the_last_reply_a_message_and_its_code_blocks(make_app):
    text = "Use this:\n\n```python\nprint(1)\n```\n\nor\n\n```sh\necho 2\n```\n"
    router = ScriptedRouter(local_reply())
    router.events = [*local_reply()[:1], *local_reply(text)[1:]]
    app = make_app(router)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await send(pilot, "code?")
        await settle(pilot, app)
        await pilot.press("ctrl+y")
        assert app.clipboard == text + " "
        reply = list(app.screen.query(MessageView))[-1]
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


async def test_one_router_serves_the_turns_so_placeholders_stay_stable(make_app):
    built = []
    router = ScriptedRouter(local_reply())

    def factory(engine, settings, offline):
        built.append(settings.mode)
        return router

    app = make_app(router, make_router=factory)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        for text in ("one", "two"):
            await send(pilot, text)
            await settle(pilot, app)
        await pilot.press("ctrl+g")  # a new mode: a new router
        await send(pilot, "three")
        await settle(pilot, app)
        assert built == ["ask", "auto"] and len(router.turns) == 3
