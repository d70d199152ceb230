"""The settings screen: privacy mode, redaction and its terms, thresholds, what a cloud request
carries, cloud providers (with their models and timeouts, and new named OpenAI-compatible ones),
and the current local model's sampling override. Dismisses with the new UserSettings, or None when
cancelled; invalid input is named, never saved."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static, Switch, TextArea

from app.settings import (
    CONTEXT_POLICIES,
    CONTEXT_POLICY_LABELS,
    MODES,
    ProviderSettings,
    SamplingOverride,
    SettingsError,
    UserSettings,
    validate,
)

Choice = TypeVar("Choice", bound=str)

SAMPLING_FIELDS = (
    ("temperature", "Temperature (0 = greedy)", float),
    ("top_p", "Top-p", float),
    ("top_k", "Top-k (0 = no limit)", int),
    ("min_p", "Min-p", float),
    ("repetition_penalty", "Repetition penalty (1 = none)", float),
)
SAMPLING_NAMES = tuple(name for name, _, _ in SAMPLING_FIELDS)


def provider_fields(p: ProviderSettings) -> list[Widget]:
    """One provider's fields: base URL and model, then its connect and read timeouts."""
    return [
        Label(f"{p.name} ({p.kind}): base URL and model; connect and read timeouts in seconds"),
        Input(p.base_url, id=f"{p.name}-base_url", classes="base-url"),
        Input(p.model, id=f"{p.name}-model", classes="model"),
        Horizontal(
            Input(f"{p.connect_timeout:g}", id=f"{p.name}-connect_timeout", type="number"),
            Input(f"{p.read_timeout:g}", id=f"{p.name}-read_timeout", type="number"),
            classes="row",
        ),
    ]


class SettingsScreen(ModalScreen[UserSettings | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="dismiss"),
        Binding("ctrl+s", "save", "Save", show=False),
    ]

    def __init__(
        self,
        settings: UserSettings,
        model: str | None = None,
        model_defaults: Mapping[str, Any] | None = None,
        learning_summary: str = "",
        hybrid_summary: str | None = None,
    ) -> None:
        """model: the local model's name, whose sampling override the screen edits (none: no such
        section); model_defaults: its own settings, shown where the override is blank;
        learning_summary: how many feedback labels exist and what the last calibration measured;
        hybrid_summary: how hybrid decoding has done so far, if it is on."""
        super().__init__()
        self.settings = settings
        self.model = model
        self.model_defaults = dict(model_defaults or {})
        self.learning_summary = learning_summary
        self.hybrid_summary = hybrid_summary
        self.providers = list(settings.providers)
        """The providers shown: the saved ones and any added here since."""

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(classes="dialog wide"):
            yield Static("[b]Settings[/b]")
            with VerticalScroll(id="fields"):
                yield Label("Privacy mode")
                yield Select([(m, m) for m in MODES], value=s.mode, allow_blank=False, id="mode")
                with Horizontal(classes="row"):
                    yield Label("Redact before anything leaves")
                    yield Switch(value=s.redact, id="redact")
                yield Label("Always redact these terms (one per line)")
                yield TextArea("\n".join(s.terms), id="terms")
                yield Label("Escalate when local confidence is below (0-1)")
                yield Input(str(s.escalate_below), id="escalate_below")
                with Horizontal(classes="row"):
                    yield Label("Learn from use (labels stay on this machine)")
                    yield Switch(value=s.learn_from_use, id="learn_from_use")
                yield Static(self.learning_summary, id="learning")
                yield Label("What a cloud request carries of the conversation (default)")
                yield Select(
                    [(CONTEXT_POLICY_LABELS[p], p) for p in CONTEXT_POLICIES],
                    value=s.context_policy, allow_blank=False, id="context_policy",
                )
                yield Label("Earlier exchanges sent under \"recent turns\"")
                yield Input(str(s.context_turns), id="context_turns", type="integer")
                yield Label("Escalate to")
                yield Select([(p.name, p.name) for p in s.providers], value=s.provider, allow_blank=False, id="provider")
                with Vertical(id="providers"):
                    for p in s.providers:
                        yield from provider_fields(p)
                yield Static(
                    "[b]Add an OpenAI-compatible provider[/b] (vLLM, Ollama's /v1, `tandem serve`, a gateway): "
                    "name, base URL, model, and its API key if it needs one (kept in the keyring; "
                    "NAME_API_KEY in the environment overrides it)"
                )
                with Horizontal(classes="row"):
                    yield Input(placeholder="name: my-vllm", id="new-name")
                    yield Input(placeholder="base URL", id="new-base_url")
                    yield Input(placeholder="model", id="new-model")
                    yield Input(placeholder="API key", password=True, id="new-key")
                    yield Button("Add", id="add-provider")
                yield Label("Hybrid decoding: the local model drafts, this server verifies (vLLM or tandem serve)")
                verifiers = [(p.name, p.name) for p in s.providers if p.kind == "openai-compatible"]
                yield Select([("off", "off"), *verifiers], value=s.verifier or "off", allow_blank=False, id="verifier")
                if s.verifier and self.hybrid_summary:
                    yield Static(self.hybrid_summary, id="hybrid-summary")
                if self.model:
                    yield Static(f"[b]Sampling for {self.model}[/b] (blank: the model's own setting)")
                    override = s.sampling_for(self.model)
                    for name, label, _ in SAMPLING_FIELDS:
                        value = getattr(override, name)
                        default = self.model_defaults.get(name)
                        yield Label(label)
                        yield Input(
                            "" if value is None else str(value), id=f"sampling-{name}",
                            placeholder="the model's own" if default is None else f"the model's own: {default}",
                        )  # fmt: skip
            yield Static("", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "add-provider":
            event.stop()
            self.add_provider()
        elif event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def add_provider(self) -> None:
        """A new named OpenAI-compatible provider from the add row: validated with the rest, shown
        with its fields and offered under "Escalate to"; it is kept when the settings are saved."""
        error = self.query_one("#error", Static)
        fields = ("name", "base_url", "model", "key")
        value = {name: self.query_one(f"#new-{name}", Input).value.strip() for name in fields}
        new = ProviderSettings(value["name"], "openai-compatible", value["base_url"], value["model"])
        try:
            candidate = self._read()
            validate(replace(candidate, providers=(*candidate.providers, new)))
        except SettingsError as problem:
            error.update(f"⚠ {problem}")
            return
        error.update("")
        if value["key"]:
            from offload import keys
            from offload.errors import KeyStoreError

            try:
                keys.set_key(new.name, value["key"])
            except KeyStoreError as problem:
                error.update(f"⚠ {problem} ({keys.env_var(new.name)} is the variable for {new.name}.)")
        self.providers.append(new)
        self.query_one("#providers", Vertical).mount_all(provider_fields(new))
        choice = self.query_one("#provider", Select)
        current = choice.value
        choice.set_options([(p.name, p.name) for p in self.providers])
        choice.value = current
        for name in fields:
            self.query_one(f"#new-{name}", Input).value = ""
        self.notify(f"Added {new.name}; save the settings to keep it, and pick it under “Escalate to” to use it.")

    def action_save(self) -> None:
        try:
            settings = validate(self._read())
        except SettingsError as error:
            self.query_one("#error", Static).update(f"⚠ {error}")
            return
        self.dismiss(settings)

    def _read(self) -> UserSettings:
        def text(widget_id: str) -> str:
            return self.query_one(f"#{widget_id}", Input).value.strip()

        def seconds(widget_id: str, what: str) -> float:
            try:
                return float(text(widget_id))
            except ValueError:
                raise SettingsError(f"{what} is a number of seconds, like 60.") from None

        try:
            threshold = float(text("escalate_below"))
        except ValueError:
            raise SettingsError("The escalation threshold is a confidence between 0 and 1; enter e.g. 0.5.")
        try:
            turns = int(text("context_turns"))
        except ValueError:
            raise SettingsError("Context turns must be a whole number from 0 to 100.")
        terms = tuple(
            line.strip() for line in self.query_one("#terms", TextArea).text.splitlines() if line.strip()
        )
        providers = tuple(
            ProviderSettings(
                p.name, p.kind, text(f"{p.name}-base_url"), text(f"{p.name}-model"),
                connect_timeout=seconds(f"{p.name}-connect_timeout", f"The connect timeout of {p.name}"),
                read_timeout=seconds(f"{p.name}-read_timeout", f"The read timeout of {p.name}"),
            )
            for p in self.providers
        )
        updated = replace(
            self.settings,
            mode=self._picked("#mode", MODES),
            redact=self.query_one("#redact", Switch).value,
            learn_from_use=self.query_one("#learn_from_use", Switch).value,
            terms=terms,
            escalate_below=threshold,
            context_turns=turns,
            context_policy=self._picked("#context_policy", CONTEXT_POLICIES),
            provider=self._picked("#provider", [p.name for p in self.providers]),
            providers=providers,
            verifier=None if (verifier := self._picked("#verifier", ["off", *(p.name for p in self.providers)])) == "off" else verifier,
        )
        if self.model:
            updated = updated.with_sampling(self.model, self._sampling())
        return updated

    def _picked(self, selector: str, options: Sequence[Choice]) -> Choice:
        """The option a select (allow_blank=False, built from `options`) shows, as its own type."""
        value = self.query_one(selector, Select).value
        for option in options:
            if option == value:
                return option
        raise SettingsError(f"Pick one of {', '.join(options)}.")

    def _sampling(self) -> SamplingOverride:
        values: dict[str, Any] = {}  # each value of its field's kind (SAMPLING_FIELDS): int or float
        for name, label, kind in SAMPLING_FIELDS:
            text = self.query_one(f"#sampling-{name}", Input).value.strip()
            if not text:
                continue
            try:
                values[name] = kind(text)
            except ValueError:
                whole = "a whole number" if kind is int else "a number"
                setting = label.split(" (")[0]
                raise SettingsError(f"{setting} for {self.model} must be {whole}, or blank for the model's own.")
        return SamplingOverride(**values)
