"""The user's settings (privacy mode, redaction terms, cloud providers, thresholds, theme, model,
per-model sampling overrides), persisted one key per field in the history store's settings table."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from app.errors import AppError

# The privacy modes and cloud-context policies are offload.privacy's (defined there once), in the
# order Ctrl+G and the chat's context key cycle them.
from offload.privacy import CONTEXT_POLICIES, MODES, ContextPolicy, Mode

if TYPE_CHECKING:
    from engine.api import Backend
    from offload.privacy import PrivacySettings
    from offload.providers.base import Timeouts

THEMES: tuple[str, ...] = ("textual-dark", "textual-light")

CONTEXT_POLICY_LABELS: dict[ContextPolicy, str] = {
    "message": "this message only", "recent": "recent turns", "whole": "whole conversation",
}

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
    connect_timeout: float = 5.0
    """Seconds to wait for a connection."""
    read_timeout: float = 60.0
    """Seconds to wait between pieces of the reply (raise it for a slow model)."""

    def timeouts(self) -> Timeouts:
        """offload.providers.Timeouts for this provider."""
        from offload.providers.base import Timeouts

        return Timeouts(connect=self.connect_timeout, read=self.read_timeout)


PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
"""As the keyring entry and the NAME_API_KEY variable take it (offload.keys), starting with a letter."""

DEFAULT_PROVIDERS: tuple[ProviderSettings, ...] = (
    ProviderSettings("openai", "openai-compatible", "https://api.openai.com/v1", "gpt-4o-mini"),
    ProviderSettings("anthropic", "anthropic", "https://api.anthropic.com", "claude-3-5-haiku-latest"),
    # A bigger machine of your own: `tandem serve`, vLLM, Ollama's /v1 or llama.cpp's server.
    ProviderSettings("onprem", "openai-compatible", "http://127.0.0.1:8000/v1", "default"),
)


@dataclass(frozen=True)
class SamplingOverride:
    """The user's own sampling settings for one local model; None keeps the model's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def request_fields(self) -> dict[str, float | int]:
        """The settings given, as GenerationRequest fields of the same names."""
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class UserSettings:
    mode: Mode = "ask"
    redact: bool = True
    context_turns: int = 2
    """Earlier exchanges a cloud request carries under the "recent turns" policy."""
    context_policy: ContextPolicy = "recent"
    """The cloud-context policy of conversations that have not chosen their own: "message"
    (this message only), "recent" (the last context_turns exchanges) or "whole"."""
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
    backend: Backend = "auto"
    """The engine backend for that model: "auto", "tvm" or "mlc"."""
    keymap: tuple[tuple[str, str], ...] = ()
    """Binding id -> keys, remapping the defaults (e.g. ("send", "ctrl+s"))."""
    learn_from_use: bool = False
    """Keep the router's signals of local answers and label them from feedback, to refit the
    model's calibration (`tandem models calibrate NAME --from-history`). Never leaves the machine."""
    verifier: str | None = None
    """The provider that verifies the local model's drafts (the hybrid route: speculative
    decoding against vLLM or `tandem serve`); None keeps hybrid decoding off."""
    sampling: tuple[tuple[str, SamplingOverride], ...] = ()
    """Model name (its folder's name, as EngineInfo.model_id gives it) -> the user's sampling
    override for it; a model not listed samples with its own settings."""

    def sampling_for(self, model: str) -> SamplingOverride:
        """The user's override for this model (all None when there is none)."""
        return dict(self.sampling).get(model, SamplingOverride())

    def with_sampling(self, model: str, override: SamplingOverride) -> UserSettings:
        """These settings with `override` for `model` (dropped when it overrides nothing)."""
        kept = tuple((name, value) for name, value in self.sampling if name != model)
        if override.request_fields():
            kept += ((model, override),)
        return replace(self, sampling=kept)

    def privacy(self, offline: bool = False) -> PrivacySettings:
        """The router's PrivacySettings; `offline` (the --offline flag) overrides the mode."""
        from offload.privacy import PrivacySettings

        mode: Mode = "offline" if offline else self.mode
        return PrivacySettings(
            mode=mode, redact=self.redact, context_turns=self.context_turns,
            context_policy=self.context_policy, terms=self.terms,
        )

    def next_mode(self) -> UserSettings:
        return replace(self, mode=MODES[(MODES.index(self.mode) + 1) % len(MODES)])

    def next_mode_needs_confirmation(self) -> bool:
        """Stepping into auto (turns leave without asking) must be deliberate; stepping towards
        privacy never needs a confirmation."""
        return self.next_mode().mode == "auto"

    def active_provider(self) -> ProviderSettings | None:
        return next((p for p in self.providers if p.name == self.provider), None)

    def verifier_provider(self) -> ProviderSettings | None:
        return next((p for p in self.providers if p.name == self.verifier), None)


class SettingsError(AppError, ValueError):
    """A setting the user entered is not valid; the message names the field and the fix."""


def validate(settings: UserSettings) -> UserSettings:
    """Check what a user can type in; raise SettingsError naming the field and the fix."""
    if settings.mode not in MODES:
        raise SettingsError(f"mode must be one of {', '.join(MODES)}, not {settings.mode!r}.")
    if not 0.0 <= settings.escalate_below <= 1.0:
        raise SettingsError("The escalation threshold is a confidence between 0 and 1; enter e.g. 0.5.")
    if not 0 <= settings.context_turns <= 100:
        raise SettingsError("Context turns must be a whole number from 0 to 100.")
    if settings.context_policy not in CONTEXT_POLICIES:
        raise SettingsError(
            f"The cloud context must be one of {', '.join(CONTEXT_POLICIES)}, not {settings.context_policy!r}."
        )
    names = [provider.name for provider in settings.providers]
    for provider in settings.providers:
        if not PROVIDER_NAME.match(provider.name):
            raise SettingsError(
                f"{provider.name!r} is not a provider name: start with a letter, then lower-case letters, "
                "digits and dashes, like my-vllm."
            )
        if names.count(provider.name) > 1:
            raise SettingsError(f"Two providers are named {provider.name}; give the new one another name.")
        for label, seconds in (("connect", provider.connect_timeout), ("read", provider.read_timeout)):
            if not 0 < seconds <= 3600:
                raise SettingsError(
                    f"The {label} timeout of {provider.name} is a number of seconds above 0 and up to 3600, like 60."
                )
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
    from engine.api import BACKENDS, check_setting  # the engine's contract module: light, no numpy

    if settings.backend not in BACKENDS:
        raise SettingsError(f"backend must be one of {', '.join(BACKENDS)}, not {settings.backend!r}.")

    for model, override in settings.sampling:
        for name, value in override.request_fields().items():
            problem = check_setting(name, value)
            if problem:
                raise SettingsError(f"Sampling for {model}: {problem}; or leave it blank for the model's own.")
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
    if name == "sampling":
        return {model: override.request_fields() for model, override in value}
    return value


def _decode(name: str, value: Any) -> Any:
    if name == "providers":
        return tuple(ProviderSettings(**p) for p in value)
    if name == "terms":
        return tuple(str(t) for t in value)
    if name == "keymap":
        return tuple((str(k), str(v)) for k, v in dict(value).items())
    if name == "sampling":
        return tuple((str(model), SamplingOverride(**fields)) for model, fields in dict(value).items())
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
