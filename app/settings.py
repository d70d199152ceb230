"""The user's settings (privacy mode, redaction terms, cloud providers, thresholds, theme, model),
persisted one key per field in the history store's settings table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Protocol

MODES: tuple[str, ...] = ("offline", "ask", "auto")
"""The privacy modes in the order Ctrl+G cycles them."""

THEMES: tuple[str, ...] = ("textual-dark", "textual-light")

SETTINGS_PREFIX = "app."


class SettingsTable(Protocol):
    """The part of the history store settings live in."""

    def get_setting(self, key: str, default: Any = None) -> Any: ...

    def set_setting(self, key: str, value: Any) -> None: ...


@dataclass(frozen=True)
class ProviderSettings:
    """One cloud (or on-prem) model Tandem may escalate to."""

    name: str
    kind: Literal["openai-compatible", "anthropic"]
    """The protocol, as offload.providers.open_provider takes it."""
    base_url: str
    model: str


DEFAULT_PROVIDERS: tuple[ProviderSettings, ...] = (
    ProviderSettings("openai", "openai-compatible", "https://api.openai.com/v1", "gpt-4o-mini"),
    ProviderSettings("anthropic", "anthropic", "https://api.anthropic.com", "claude-3-5-haiku-latest"),
    # A bigger machine of your own: `tandem serve`, vLLM, Ollama's /v1 or llama.cpp's server.
    ProviderSettings("onprem", "openai-compatible", "http://127.0.0.1:8000/v1", "default"),
)


@dataclass(frozen=True)
class UserSettings:
    mode: Literal["offline", "ask", "auto"] = "ask"
    redact: bool = True
    context_turns: int = 4
    terms: tuple[str, ...] = ()
    providers: tuple[ProviderSettings, ...] = DEFAULT_PROVIDERS
    provider: str = "openai"
    """The provider escalations go to."""
    escalate_below: float = 0.5
    """Local replies whose confidence falls below this are handed to the cloud (when allowed);
    the router's EscalationThreshold risk is 1 minus this."""
    theme: str = "textual-dark"
    model_dir: str | None = None
    """The local model directory; None means the embedded tandem-nano."""
    backend: str = "auto"
    """The engine backend for that model: "auto", "tvm" or "mlc"."""
    keymap: tuple[tuple[str, str], ...] = ()
    """Binding id -> keys, remapping the defaults (e.g. ("send", "ctrl+s"))."""
    verifier: str | None = None
    """The provider that verifies the local model's drafts (the hybrid route: speculative
    decoding against vLLM or `tandem serve`); None keeps hybrid decoding off."""

    def privacy(self, offline: bool = False) -> Any:
        """The router's PrivacySettings; `offline` (the --offline flag) overrides the mode."""
        from offload.privacy import PrivacySettings

        mode = "offline" if offline else self.mode
        return PrivacySettings(mode=mode, redact=self.redact, context_turns=self.context_turns, terms=self.terms)

    def next_mode(self) -> UserSettings:
        return replace(self, mode=MODES[(MODES.index(self.mode) + 1) % len(MODES)])

    def active_provider(self) -> ProviderSettings | None:
        return next((p for p in self.providers if p.name == self.provider), None)

    def verifier_provider(self) -> ProviderSettings | None:
        return next((p for p in self.providers if p.name == self.verifier), None)


class SettingsError(ValueError):
    """A setting the user entered is not valid; the message names the field and the fix."""


def validate(settings: UserSettings) -> UserSettings:
    """Check what a user can type in; raise SettingsError naming the field and the fix."""
    if settings.mode not in MODES:
        raise SettingsError(f"mode must be one of {', '.join(MODES)}, not {settings.mode!r}.")
    if not 0.0 <= settings.escalate_below <= 1.0:
        raise SettingsError("The escalation threshold is a confidence between 0 and 1; enter e.g. 0.5.")
    if not 0 <= settings.context_turns <= 100:
        raise SettingsError("Context turns must be a whole number from 0 to 100.")
    for provider in settings.providers:
        if not provider.base_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"The base URL of {provider.name} must start with http:// or https://, "
                f"like https://api.openai.com/v1."
            )
        if not provider.model.strip():
            raise SettingsError(f"Name a model for {provider.name}, like gpt-4o-mini.")
    if settings.theme not in THEMES:
        raise SettingsError(f"theme must be one of {', '.join(THEMES)}, not {settings.theme!r}.")
    if settings.provider not in {p.name for p in settings.providers}:
        raise SettingsError(f"No provider is named {settings.provider!r}; pick one of the list.")
    if settings.verifier is not None:
        verifier = settings.verifier_provider()
        if verifier is None or verifier.kind != "openai-compatible":
            raise SettingsError(
                f"The hybrid verifier must be an OpenAI-compatible provider (vLLM or `tandem serve`), "
                f"not {settings.verifier!r}; pick one such as onprem, or off."
            )
    return settings


def _encode(name: str, value: Any) -> Any:
    """A field as the JSON value the settings table keeps."""
    if name == "providers":
        return [asdict(p) for p in value]
    if name == "terms":
        return list(value)
    if name == "keymap":
        return dict(value)
    return value


def _decode(name: str, value: Any) -> Any:
    if name == "providers":
        return tuple(ProviderSettings(**p) for p in value)
    if name == "terms":
        return tuple(str(t) for t in value)
    if name == "keymap":
        return tuple((str(k), str(v)) for k, v in dict(value).items())
    return value


def load_settings(table: SettingsTable) -> UserSettings:
    """The saved settings; a field never saved, or saved unreadably or invalidly, keeps its default."""
    saved: dict[str, Any] = {}
    for f in fields(UserSettings):
        raw = table.get_setting(SETTINGS_PREFIX + f.name)
        if raw is None:
            continue
        try:
            saved[f.name] = _decode(f.name, raw)
        except (ValueError, TypeError, AttributeError):
            continue  # a hand-edited or older value: the default is the safe reading
    try:
        return validate(UserSettings(**saved))
    except (SettingsError, TypeError):
        pass
    settings = UserSettings()  # something is off: keep each field that is valid on its own
    for name, value in saved.items():
        try:
            settings = validate(replace(settings, **{name: value}))
        except (SettingsError, TypeError):
            continue
    return settings


def save_settings(table: SettingsTable, settings: UserSettings) -> None:
    validate(settings)
    for f in fields(UserSettings):
        table.set_setting(SETTINGS_PREFIX + f.name, _encode(f.name, getattr(settings, f.name)))
