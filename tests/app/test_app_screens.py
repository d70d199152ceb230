"""Settings, API keys, the model picker, themes and the command palette, through Pilot."""

from __future__ import annotations

import json

import keyring
import pytest
from app_helpers import SIZE, until

from app.local_models import LocalModel, ModelUnavailable
from app.paths import data_dir
from app.settings import load_settings
from app.tui.screens.keys import KeysScreen
from app.tui.screens.models import ModelPickerScreen
from app.tui.screens.settings import SettingsScreen
from app.tui.widgets.status_bar import StatusBar

pytestmark = pytest.mark.anyio


async def test_settings_are_edited_validated_and_saved(make_app, store):
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen), "the settings screen")
        screen = app.screen
        screen.query_one("#escalate_below").value = "2"
        screen.query_one("#save").press()
        await until(pilot, lambda: str(screen.query_one("#error").render()), "the error line")
        assert "between 0 and 1" in str(screen.query_one("#error").render())
        assert app.screen is screen  # nothing saved, still open
        screen.query_one("#escalate_below").value = "0.35"
        screen.query_one("#terms").text = "Project Falcon\nACME"
        screen.query_one("#openai-base_url").value = "http://127.0.0.1:8000/v1"
        screen.query_one("#openai-model").value = "llama-70b"
        screen.query_one("#mode").value = "auto"
        screen.query_one("#save").press()
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen), "the settings to close")
    saved = load_settings(store)
    assert saved.escalate_below == 0.35
    assert saved.terms == ("Project Falcon", "ACME")
    assert saved.mode == "auto"
    assert saved.active_provider().base_url == "http://127.0.0.1:8000/v1"
    assert saved.active_provider().model == "llama-70b"


async def test_the_current_models_sampling_override_is_edited_and_saved(make_app, store):
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await pilot.pause()
        screen = pilot.app.screen
        assert isinstance(screen, SettingsScreen)
        model = screen.model
        assert model  # the section is there, for the model the app runs
        screen.query_one("#sampling-top_k").value = "forty"
        screen.query_one("#save").press()
        await pilot.pause()
        assert "Top-k for " + model + " must be a whole number" in str(screen.query_one("#error").render())
        screen.query_one("#sampling-top_k").value = "40"
        screen.query_one("#sampling-temperature").value = "0.2"
        screen.query_one("#save").press()
        await pilot.pause()
        assert not isinstance(pilot.app.screen, SettingsScreen)
    assert load_settings(store).sampling_for(model).request_fields() == {"temperature": 0.2, "top_k": 40}


async def test_a_bad_base_url_is_named_and_not_saved(make_app, store):
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen), "the settings screen")
        screen = pilot.app.screen
        screen.query_one("#anthropic-base_url").value = "api.anthropic.com"
        screen.query_one("#save").press()
        await until(pilot, lambda: str(screen.query_one("#error").render()), "the error line")
        assert "base URL of anthropic must start with http" in str(screen.query_one("#error").render())
    assert load_settings(store).providers[1].base_url == "https://api.anthropic.com"


async def test_keys_are_set_in_the_keyring_and_removed_never_shown(make_app):
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, KeysScreen), "the keys screen")
        screen = app.screen
        table = screen.query_one("#sources")
        assert table.get_row("openai")[1] == "not set"
        screen.query_one("#secret").value = "sk-test-123456789"
        screen.query_one("#set").press()
        await until(pilot, lambda: table.get_row("openai")[1] != "not set", "the key to be listed")
        assert keyring.get_password("tandem", "openai") == "sk-test-123456789"
        # Issue 13 item 4: the test's keyring is keyrings.alt's plaintext file; the screen says so.
        assert table.get_row("openai")[1] == "plaintext keyring file"
        assert "not encrypted" in str(screen.query_one("#backend").render())
        assert screen.query_one("#secret").value == ""
        screen.query_one("#remove").press()
        await until(pilot, lambda: table.get_row("openai")[1] == "not set", "the key to be gone")
        assert keyring.get_password("tandem", "openai") is None
        assert table.get_row("openai")[1] == "not set"


async def test_an_environment_key_is_shown_as_overriding(make_app, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(pilot.app.screen, KeysScreen), "the keys screen")
        assert pilot.app.screen.query_one("#sources").get_row("anthropic")[1] == "environment (ANTHROPIC_API_KEY)"


async def test_the_model_picker_offers_the_embedded_and_converted_models(make_app, store):
    converted = data_dir() / "models" / "llama-3b-q4"
    converted.mkdir(parents=True)
    (converted / "mlc-chat-config.json").write_text(json.dumps({"model_type": "llama"}))
    asked: list[LocalModel] = []

    def opener(model, on_progress):
        asked.append(model)
        on_progress("compiling", 0.4)
        raise ModelUnavailable("no engine in this test")

    async with make_app(open_engine=opener, load_engine=True).run_test(size=SIZE) as pilot:
        app = pilot.app
        await app.workers.wait_for_complete()
        await pilot.press("ctrl+l")
        await until(pilot, lambda: isinstance(app.screen, ModelPickerScreen), "the model picker")
        screen = app.screen
        assert [m.label for m in screen.models][:2] == ["tandem-nano", "llama-3b-q4"]
        await pilot.press("down", "enter")
        await until(pilot, lambda: len(asked) == 2, "the picked model to be opened")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [m.label for m in asked] == ["tandem-nano", "llama-3b-q4"]
        status = str(app.chat.query_one(StatusBar).query_one("#engine-status").render())
        assert status == "local model unavailable: no engine in this test"
    assert load_settings(store).model_dir == str(converted)


async def test_ctrl_t_switches_light_and_dark_and_remembers(make_app, store):
    async with make_app().run_test(size=SIZE) as pilot:
        assert pilot.app.theme == "textual-dark"
        await pilot.press("ctrl+t")
        assert pilot.app.theme == "textual-light"
    assert load_settings(store).theme == "textual-light"
    async with make_app().run_test(size=SIZE) as pilot:
        assert pilot.app.theme == "textual-light"


def _highlighted(palette) -> str:
    """The command palette's highlighted match, as plain text ("" while it is still searching)."""
    from textual.widgets import OptionList

    options = palette.query_one(OptionList)
    if options.highlighted is None:
        return ""
    return str(options.get_option_at_index(options.highlighted).prompt)


async def test_the_palette_has_an_entry_for_every_chat_action(make_app):
    async with make_app().run_test(size=SIZE) as pilot:
        app = pilot.app
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for title, _, action in app.chat.COMMANDS_FOR_PALETTE:
            assert title in titles
            assert callable(getattr(app.chat, f"action_{action}"))
        await pilot.press("ctrl+p")
        await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette", "the palette")
        await pilot.press(*"Egress ledger")
        palette = app.screen
        await until(pilot, lambda: _highlighted(palette).startswith("Egress ledger"), "the palette's match")
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "EgressScreen", "the egress ledger")


async def test_bindings_carry_the_documented_ids_and_can_be_remapped(make_app, store):
    from app.settings import UserSettings, save_settings
    from app.tui.screens.chat import ChatScreen
    from app.tui.widgets.prompt import PromptInput

    ids = {b.id for b in ChatScreen.BINDINGS} | {b.id for b in PromptInput.BINDINGS}
    assert {
        "send", "newline", "cancel", "new_chat", "search", "rename", "delete_chat", "toggle_cloud",
        "cycle_mode", "egress", "settings", "keys", "models", "theme", "copy",
    } <= ids
    save_settings(store, UserSettings(keymap=(("new_chat", "ctrl+b"),)))
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+b")
        await until(pilot, lambda: store.list_conversations(), "the remapped key's new conversation")
        assert [c.title for c in store.list_conversations()] == ["New conversation"]


async def test_an_unusable_keyring_is_named_not_fatal(make_app, monkeypatch):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    async with make_app().run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(pilot.app.screen, KeysScreen), "the keys screen")
        assert str(pilot.app.screen.query_one("#error").render()).startswith("⚠ ")
