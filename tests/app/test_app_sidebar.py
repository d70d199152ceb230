"""Conversations in the sidebar: new, rename, delete with confirmation, archive; all on a real store."""

from __future__ import annotations

import pytest
from app_helpers import SIZE

from app.tui.screens.confirm import ConfirmScreen
from app.tui.screens.rename import RenameScreen
from app.tui.widgets.message import MessageView
from app.tui.widgets.sidebar import Sidebar

pytestmark = pytest.mark.anyio


def titles(app) -> list[str]:
    return app.chat.query_one(Sidebar).titles()


async def test_the_latest_conversation_opens_with_its_messages(make_app, store):
    older = store.create_conversation(title="older")
    store.add_message(older.id, "user", "old question")
    newer = store.create_conversation(title="newer")
    store.add_message(newer.id, "user", "new question")
    store.add_message(newer.id, "assistant", "new answer", route="local", model="tandem-nano", provider="tvm")
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        assert titles(app) == ["newer", "older"]
        assert [v.content for v in app.chat.query(MessageView)] == ["new question", "new answer"]
        assert app.chat.query(MessageView).last().meta.startswith("⌂ local · tandem-nano (tvm)")


async def test_picking_a_conversation_opens_it(make_app, store):
    older = store.create_conversation(title="older")
    store.add_message(older.id, "user", "old question")
    store.create_conversation(title="newer")
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        app.chat.query_one("#conversations").focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.chat.conversation_id == older.id
        assert [v.content for v in app.chat.query(MessageView)] == ["old question"]


async def test_ctrl_n_starts_a_new_conversation(make_app, store):
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert titles(pilot.app) == ["New conversation"]
        assert [c.title for c in store.list_conversations()] == ["New conversation"]


async def test_f2_renames_and_escape_keeps_the_title(make_app, store):
    conversation = store.create_conversation(title="draft")
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await pilot.pause()
        assert isinstance(pilot.app.screen, RenameScreen)
        await pilot.press(*"Trip plans", "enter")
        await pilot.pause()
        assert store.get_conversation(conversation.id).title == "Trip plans"
        assert titles(pilot.app) == ["Trip plans"]
        await pilot.press("f2", "x", "escape")
        await pilot.pause()
        assert store.get_conversation(conversation.id).title == "Trip plans"


async def test_delete_asks_first_and_removes_the_conversation_and_its_messages(make_app, store):
    keep = store.create_conversation(title="keep")
    doomed = store.create_conversation(title="doomed")
    store.add_message(doomed.id, "user", "secret plans")
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        await pilot.press("ctrl+d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")  # no
        await pilot.pause()
        assert titles(app) == ["doomed", "keep"]
        await pilot.press("ctrl+d")
        await pilot.pause()
        await pilot.click("#yes")
        await pilot.pause()
        assert titles(app) == ["keep"]
        assert [c.id for c in store.list_conversations()] == [keep.id]
        assert store.search("secret") == []
        assert app.chat.conversation_id == keep.id


async def test_archive_hides_a_conversation_and_show_archived_brings_it_back(make_app, store):
    store.create_conversation(title="keep")
    old = store.create_conversation(title="old")
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        await app.chat.action_archive()
        await pilot.pause()
        assert titles(app) == ["keep"]
        assert store.get_conversation(old.id).archived
        await app.chat.action_toggle_archived()
        await pilot.pause()
        assert set(titles(app)) == {"keep", "old"}
