"""The chat on the real router and the real OpenAI-compatible provider, against a cloud served on
127.0.0.1: ask-mode approval of the exact redacted payload, placeholders restored in the reply, the
egress ledger. `/cloud` sends the turn straight to the cloud, past the real local model."""

from __future__ import annotations

import json

import pytest
from app_helpers import SIZE, until_ready

from app.tui.screens.approve import ApproveScreen
from app.tui.widgets.message import MessageView

pytestmark = pytest.mark.anyio


async def approve_when_asked(pilot) -> tuple[str, str]:
    """Wait for the approval modal; read what it shows (payload, destination), then press Send."""
    for _ in range(300):
        if isinstance(pilot.app.screen, ApproveScreen):
            break
        await pilot.pause(0.02)
    screen = pilot.app.screen
    assert isinstance(screen, ApproveScreen)
    shown = screen.query_one("#payload").text, str(screen.query_one("#destination").render())
    await pilot.click("#send")
    return shown


async def test_ask_mode_sends_only_the_redacted_payload_it_showed(nano_app, store, loopback_cloud, cloud_settings):
    conversation = store.create_conversation(title="mail", cloud_opt_in=True)
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await until_ready(pilot)
        await pilot.press(*"/cloud write to ada@example.com please", "enter")
        shown, destination = await approve_when_asked(pilot)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "ada@example.com" not in shown and "[EMAIL_1]" in shown
        assert loopback_cloud.bodies == [shown]  # exactly what was shown, and nothing else, left
        assert loopback_cloud.base_url.split("//")[1].split("/")[0] in destination
        reply = app.chat.query(MessageView).last()
        assert reply.content == "I will write to ada@example.com today."  # placeholder restored
        assert reply.meta.startswith("☁ cloud · loopback loopback-model")
        [egress] = store.egress()
        assert (egress.conversation_id, egress.payload) == (conversation.id, shown)
        assert egress.bytes_sent > len(shown) and dict(egress.redactions) == {"EMAIL": 1}
        stored = store.messages(conversation.id)[-1]
        assert (stored.route, stored.content) == ("cloud", "I will write to ada@example.com today.")
        assert json.loads(shown)["model"] == "loopback-model"


async def test_a_typed_cloud_prefix_stays_out_of_the_title_the_bubble_and_the_store(nano_app, store):
    """Issue 16 item 2: the prefix was read twice, so a new conversation was titled "/cloud ..."
    and its bubble showed the prefix while the stored message did not. It is read once now."""
    from app.tui.widgets.sidebar import Sidebar

    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await until_ready(pilot)
        await pilot.press(*"/cloud what is tandem?", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        question = app.chat.query(MessageView).first()
        assert (question.role, question.content) == ("user", "what is tandem?")
        (conversation,) = store.list_conversations()
        assert conversation.title == "what is tandem?"
        assert [m.content for m in store.messages(conversation.id) if m.role == "user"] == ["what is tandem?"]
        assert app.chat.query_one(Sidebar).titles() == ["what is tandem?"]
        assert "/cloud" not in str(app.chat.query_one("#header").render())
