"""Local-first made visible: the per-conversation cloud toggle, the privacy mode, the local lock,
the offline indicator and the egress ledger, from the chat screen."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from app_helpers import SIZE

from app.settings import load_settings
from app.store import EgressRecord
from app.tui.screens.egress import EgressScreen
from app.tui.widgets.status_bar import StatusBar
from offload.events import Egress
from offload.outgoing import Exchange, OutgoingRequest

pytestmark = pytest.mark.anyio


def header(app) -> str:
    return str(app.chat.query_one("#header").render())


def badge(app, widget_id: str) -> str:
    return str(app.chat.query_one(StatusBar).query_one(f"#{widget_id}").render())


async def test_ctrl_o_toggles_cloud_for_this_conversation_only(make_app, store):
    other = store.create_conversation(title="other")
    mine = store.create_conversation(title="mine")
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        assert "cloud: off" in header(app)
        await pilot.press("ctrl+o")
        assert store.get_conversation(mine.id).cloud_opt_in
        assert not store.get_conversation(other.id).cloud_opt_in
        assert "cloud: on" in header(app)
        await pilot.pause()
        labels = [str(label.render()) for label in app.chat.query("ConversationItem Label")]
        assert labels == ["mine ☁", "other"]
        await pilot.press("ctrl+o")
        assert not store.get_conversation(mine.id).cloud_opt_in


async def test_ctrl_o_without_a_conversation_starts_one_opted_in(make_app, store):
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o")
        [conversation] = store.list_conversations()
        assert conversation.cloud_opt_in


async def test_ctrl_g_cycles_the_mode_and_it_is_saved(make_app, store):
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        assert badge(app, "mode-badge") == "mode: ask"
        seen = []
        for keys in (("ctrl+g", "y"), ("ctrl+g",), ("ctrl+g",)):  # auto is confirmed (issue 13 item 2)
            await pilot.press(*keys)
            seen.append((app.settings.mode, badge(app, "mode-badge"), load_settings(store).mode))
        assert seen == [
            ("auto", "mode: auto", "auto"),
            ("offline", "mode: offline", "offline"),
            ("ask", "mode: ask", "ask"),
        ]


async def test_offline_mode_turns_the_indicator_and_the_network_switch(make_app):
    from offload.network import NETWORK

    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        assert badge(app, "network-badge") == "● online"
        await pilot.press("ctrl+g", "n")  # ask -> (auto declined) -> offline
        await pilot.pause()
        assert app.settings.mode == "offline"
        assert NETWORK.state.forced_offline
        assert badge(app, "network-badge") == "● offline: offline mode is on"


async def test_the_offline_flag_wins_and_cannot_be_cycled_away(make_app):
    from offload.network import NETWORK

    async with make_app(offline=True).run_test(size=SIZE) as pilot:
        app = pilot.app
        await pilot.pause()
        assert NETWORK.state.forced_offline
        assert badge(app, "mode-badge") == "mode: offline"
        await pilot.press("ctrl+g")
        assert app.settings.mode == "ask" and NETWORK.state.forced_offline


async def test_the_local_lock_forbids_the_cloud_toggle(make_app, store):
    conversation = store.create_conversation(title="private")
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        app.chat.action_toggle_local_lock()
        assert "local only" in header(app)
        await pilot.press("ctrl+o")
        assert not store.get_conversation(conversation.id).cloud_opt_in


async def test_ctrl_e_lists_what_left_with_its_exact_payload(make_app, store):
    conversation = store.create_conversation(title="t")
    request = OutgoingRequest("openai", "api.openai.com", '{"content": "[EMAIL_1] asked"}')
    store.record_egress(
        Egress(Exchange(request, 321, 654), redactions={"EMAIL": 1}, context_policy="recent", context_messages=2),
        conversation_id=conversation.id,
    )
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        await pilot.press("ctrl+e")
        await pilot.pause()
        assert isinstance(app.screen, EgressScreen)
        table = app.screen.query_one("#ledger")
        row = table.get_row_at(0)
        body = len('{"content": "[EMAIL_1] asked"}')
        assert row[2:] == ["openai", "api.openai.com", str(body), "321", "654", "recent +2", "EMAIL×1"]
        assert app.screen.query_one("#payload").text == '{"content": "[EMAIL_1] asked"}'
        summary = str(app.screen.query_one("#summary").render())
        assert f"1 request left this machine: {body} bytes of request body, 321 bytes on the wire" in summary


async def test_the_ledger_says_when_only_a_hash_was_kept(make_app):
    record = EgressRecord(1, datetime(2026, 1, 2, tzinfo=timezone.utc), None, "openai", "h", None, "ab12", 3, 3, 4)
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.app.push_screen(EgressScreen([record]))
        await pilot.pause()
        assert "sha256 ab12" in pilot.app.screen.query_one("#payload").text
