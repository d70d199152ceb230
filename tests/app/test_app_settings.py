"""User settings in the store's settings table: round trip, defaults, and bad values."""

from __future__ import annotations

import pytest

from app.settings import (
    ProviderSettings,
    SamplingOverride,
    SettingsError,
    UserSettings,
    load_settings,
    save_settings,
    validate,
)


def test_a_fresh_store_gives_the_documented_defaults(store):
    settings = load_settings(store)
    assert (settings.mode, settings.redact, settings.theme, settings.model_dir) == ("ask", True, "textual-dark", None)
    assert settings.privacy().mode == "ask"
    assert settings.privacy(offline=True).mode == "offline"


def test_settings_round_trip(store):
    chosen = UserSettings(
        mode="auto",
        terms=("Falcon",),
        providers=(ProviderSettings("onprem", "openai-compatible", "http://10.0.0.5:8000/v1", "llama-70b"),),
        provider="onprem",
        escalate_below=0.3,
        theme="textual-light",
        model_dir="/models/llama",
        keymap=(("send", "ctrl+s"),),
    )
    save_settings(store, chosen)
    assert load_settings(store) == chosen


def test_one_bad_stored_value_keeps_its_default_and_the_rest(store):
    save_settings(store, UserSettings(mode="auto", escalate_below=0.2))
    store.set_setting("app.escalate_below", 7)
    store.set_setting("app.providers", "not a list")
    settings = load_settings(store)
    assert (settings.mode, settings.escalate_below) == ("auto", 0.5)
    assert settings.providers == UserSettings().providers


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "loud"}, "mode must be one of"),
        ({"context_turns": -1}, "Context turns"),
        ({"theme": "neon"}, "theme must be one of"),
        ({"provider": "nobody"}, "No provider is named"),
    ],
)
def test_invalid_settings_are_refused_with_the_field_named(change, message):
    from dataclasses import replace

    with pytest.raises(SettingsError, match=message):
        validate(replace(UserSettings(), **change))


def test_cycling_the_mode_follows_offline_ask_auto():
    assert UserSettings(mode="ask").next_mode().mode == "auto"
    assert UserSettings(mode="auto").next_mode().mode == "offline"
    assert UserSettings(mode="offline").next_mode().mode == "ask"
    # Issue 13 item 2: only the step into auto asks for a confirmation.
    assert [UserSettings(mode=m).next_mode_needs_confirmation() for m in ("offline", "ask", "auto")] == [
        False, True, False,
    ]


def test_sampling_overrides_round_trip_per_model(store):
    chosen = UserSettings().with_sampling("SmolLM2-135M-Instruct", SamplingOverride(temperature=0.2, top_p=0.9))
    chosen = chosen.with_sampling("tandem-nano", SamplingOverride(repetition_penalty=1.1, top_k=40))
    save_settings(store, chosen)
    loaded = load_settings(store)
    assert loaded == chosen
    assert loaded.sampling_for("SmolLM2-135M-Instruct").request_fields() == {"temperature": 0.2, "top_p": 0.9}
    assert loaded.sampling_for("unknown").request_fields() == {}
    cleared = loaded.with_sampling("tandem-nano", SamplingOverride())
    assert [model for model, _ in cleared.sampling] == ["SmolLM2-135M-Instruct"]


@pytest.mark.parametrize("bad", [SamplingOverride(top_p=0.0), SamplingOverride(min_p=2.0), SamplingOverride(temperature=-1)])
def test_a_bad_sampling_override_is_named(bad):
    with pytest.raises(SettingsError, match="Sampling for my-model: .*leave it blank"):
        validate(UserSettings().with_sampling("my-model", bad))
