"""The settings screen: privacy mode, redaction and its terms, thresholds, cloud providers and models.
Dismisses with the new UserSettings, or None when cancelled; invalid input is named, never saved."""

from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, Switch, TextArea

from app.settings import MODES, ProviderSettings, SettingsError, UserSettings, validate


class SettingsScreen(ModalScreen[UserSettings | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="dismiss"),
        Binding("ctrl+s", "save", "Save", show=False),
    ]

    def __init__(self, settings: UserSettings, hybrid_summary: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.hybrid_summary = hybrid_summary
        """How hybrid decoding has done so far (acceptance, verifier passes saved), if it is on."""

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
                yield Label("Earlier turns sent with a cloud request")
                yield Input(str(s.context_turns), id="context_turns", type="integer")
                yield Label("Escalate to")
                yield Select([(p.name, p.name) for p in s.providers], value=s.provider, allow_blank=False, id="provider")
                for p in s.providers:
                    yield Label(f"{p.name} ({p.kind}) base URL and model")
                    yield Input(p.base_url, id=f"{p.name}-base_url", classes="base-url")
                    yield Input(p.model, id=f"{p.name}-model", classes="model")
                yield Label("Hybrid decoding: the local model drafts, this server verifies (vLLM or tandem serve)")
                verifiers = [(p.name, p.name) for p in s.providers if p.kind == "openai-compatible"]
                yield Select([("off", "off"), *verifiers], value=s.verifier or "off", allow_blank=False, id="verifier")
                if s.verifier and self.hybrid_summary:
                    yield Static(self.hybrid_summary, id="hybrid-summary")
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
        return replace(
            self.settings,
            mode=self.query_one("#mode", Select).value,
            redact=self.query_one("#redact", Switch).value,
            terms=terms,
            escalate_below=threshold,
            context_turns=turns,
            provider=self.query_one("#provider", Select).value,
            providers=providers,
            verifier=None if self.query_one("#verifier", Select).value == "off" else self.query_one("#verifier", Select).value,
        )
