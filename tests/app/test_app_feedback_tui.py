"""Learning from use in the TUI, through Pilot on the real engine: the settings screen turns it on
and shows the labels kept; F8 and F7 mark the last local reply."""

from __future__ import annotations

import pytest
from app_helpers import SIZE

from app.settings import load_settings
from app.tui.screens.settings import SettingsScreen

pytestmark = pytest.mark.anyio


async def settle(pilot, app) -> None:
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def test_settings_turn_learning_on_and_f8_f7_label_the_last_reply(nano_app, store):
    app = nano_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press(*"what key quits tandem?")
        await pilot.press("enter")
        await settle(pilot, app)
        await pilot.press("f8")  # learning is off: nothing is kept, the user is told how to turn it on
        await pilot.pause()
        assert store.feedback_labels() == []

        await pilot.press("ctrl+s")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        assert "0 labelled answers" in str(screen.query_one("#learning").render())
        screen.query_one("#learn_from_use").value = True
        screen.query_one("#save").press()
        await pilot.pause()
        assert load_settings(store).learn_from_use

        await pilot.press(*"/local what key quits tandem?")
        await pilot.press("enter")
        await settle(pilot, app)
        await pilot.press("f8")
        await pilot.pause()
        [label] = store.feedback_labels()
        assert not label.good and label.source == "explicit"
        await pilot.press("f7")
        await pilot.pause()
        assert [l.good for l in store.feedback_labels()] == [True]
