"""Full-text search over history from the sidebar: results list, and a result jumps to its message."""

from __future__ import annotations

import pytest
from app_helpers import SIZE

from app.tui.screens.search import SearchScreen
from app.tui.widgets.message import MessageView

pytestmark = pytest.mark.anyio


async def test_search_lists_hits_and_jumps_to_the_message(make_app, store):
    recipes = store.create_conversation(title="Recipes")
    store.add_message(recipes.id, "user", "how long to boil an egg")
    target = store.add_message(recipes.id, "assistant", "Boil the egg for seven minutes.")
    other = store.create_conversation(title="Other")
    store.add_message(other.id, "user", "unrelated")
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        assert app.chat.conversation_id == other.id
        await pilot.press("ctrl+f")
        assert app.focused.id == "search"
        await pilot.press(*"egg", "enter")
        await pilot.pause()
        assert isinstance(app.screen, SearchScreen)
        assert len(app.screen.hits) == 2
        assert "2 results" in str(app.screen.query_one("#summary").render())
        app.screen.query_one("#hits").index = [h.message_id for h in app.screen.hits].index(target.id)
        await pilot.press("enter")
        await pilot.pause()
        assert app.chat.conversation_id == recipes.id
        found = app.chat.query("MessageView.-found")
        assert [v.message_id for v in found] == [target.id]
        assert app.focused is found.first(MessageView)


async def test_search_without_hits_says_so_and_escape_returns(make_app, store):
    store.create_conversation(title="t")
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+f", *"nowhere", "enter")
        await pilot.pause()
        assert "0 results" in str(pilot.app.screen.query_one("#summary").render())
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, SearchScreen)
