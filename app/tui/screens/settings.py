"""The settings screen: privacy mode, redaction and its terms, thresholds, cloud providers and models,
and the current local model's sampling override. Dismisses with the new UserSettings, or None when
cancelled; invalid input is named, never saved."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
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

SAMPLING_FIELDS = (
    ("temperature", "Temperature (0 = greedy)", float),
    ("top_p", "Top-p", float),
    ("top_k", "Top-k (0 = no limit)", int),
    ("min_p", "Min-p", float),
    ("repetition_penalty", "Repetition penalty (1 = none)", float),
)
SAMPLING_NAMES = tuple(name for name, _, _ in SAMPLING_FIELDS)


class SettingsScreen(ModalScreen[UserSettings | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="dismiss"),
        Binding("ctrl+s", "save", "Save", show=False),
    ]

    def __init__(
        self, settings: UserSettings, model: str | None = None, model_defaults: Mapping[str, Any] | None = None
    ) -> None:
        """model: the local model's name, whose sampling override the screen edits (none: no such
        section); model_defaults: its own settings, shown where the override is blank."""
        super().__init__()
        self.settings = settings
        self.model = model
        self.model_defaults = dict(model_defaults or {})

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
                yield Label("What a cloud request carries of the conversation (default)")
                yield Select(
                    [(CONTEXT_POLICY_LABELS[p], p) for p in CONTEXT_POLICIES],
                    value=s.context_policy, allow_blank=False, id="context_policy",
                )
                yield Label("Earlier exchanges sent under \"recent turns\"")
                yield Input(str(s.context_turns), id="context_turns", type="integer")
                yield Label("Escalate to")
                yield Select([(p.name, p.name) for p in s.providers], value=s.provider, allow_blank=False, id="provider")
                for p in s.providers:
                    yield Label(f"{p.name} ({p.kind}) base URL and model")
                    yield Input(p.base_url, id=f"{p.name}-base_url", classes="base-url")
                    yield Input(p.model, id=f"{p.name}-model", classes="model")
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
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

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
            ProviderSettings(p.name, p.kind, text(f"{p.name}-base_url"), text(f"{p.name}-model"))
            for p in self.settings.providers
        )
        updated = replace(
            self.settings,
            mode=self.query_one("#mode", Select).value,
            redact=self.query_one("#redact", Switch).value,
            terms=terms,
            escalate_below=threshold,
            context_turns=turns,
            context_policy=self.query_one("#context_policy", Select).value,
            provider=self.query_one("#provider", Select).value,
            providers=providers,
        )
        if self.model:
            updated = updated.with_sampling(self.model, self._sampling())
        return updated

    def _sampling(self) -> SamplingOverride:
        values: dict[str, float | int] = {}
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
