"""Ask mode: show exactly what would leave the machine, redacted, and where it would go."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static, TextArea


class ApproveScreen(ModalScreen[bool]):
    """Dismisses True when the user sends, False when they keep the turn local."""

    BINDINGS = [
        Binding("escape", "answer(False)", "Keep local", id="dismiss"),
        Binding("ctrl+s", "answer(True)", "Send", show=False),
    ]

    def __init__(self, preview: Any) -> None:
        super().__init__()
        self.preview = preview

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(
                f"Send this to [b]{self.preview.provider}[/b] at [b]{self.preview.host}[/b]?",
                id="destination",
            )
            size = len(self.preview.payload.encode())
            # "Request body", as the egress ledger's body column counts it (the wire adds headers).
            yield Static(
                f"The request body, exactly as below: {size} bytes (HTTP headers go with it).\n"
                "[b]Ctrl+S[/b] sends · [b]Esc[/b] keeps it local · [b]Tab[/b] moves between the buttons, "
                "[b]Enter[/b] presses the highlighted one",
                classes="hint",
                id="hint",
            )
            yield TextArea(self.preview.payload, read_only=True, id="payload")
            with Horizontal(classes="buttons"):
                yield Button("Send", variant="warning", id="send")
                yield Button("Keep local", variant="primary", id="keep")

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "send")

    def action_answer(self, send: bool) -> None:
        self.dismiss(send)
