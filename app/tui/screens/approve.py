"""Ask mode: show exactly what would leave the machine, redacted, and where it would go; the
earlier turns it carries can be dropped here, for this request, before it is sent."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static, TextArea


class ApproveScreen(ModalScreen[Any]):
    """Dismisses with an offload.router.Approval: SEND, SEND_ALONE (the earlier turns dropped)
    or KEEP_LOCAL."""

    BINDINGS = [
        Binding("escape", "keep_local", "Keep local", id="dismiss"),
        Binding("ctrl+s", "send", "Send", show=False),
        Binding("ctrl+d", "toggle_earlier", "Drop earlier turns", show=False),
    ]

    def __init__(self, preview: Any) -> None:
        super().__init__()
        self.preview = preview
        self.alone = False
        """Whether the earlier turns were dropped (the message goes alone)."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(
                f"Send this to [b]{self.preview.provider}[/b] at [b]{self.preview.host}[/b]?",
                id="destination",
            )
            yield Static("", id="context", classes="hint")
            # "Request body", as the egress ledger's body column counts it (the wire adds headers).
            yield Static("", id="size", classes="hint")
            drop = "[b]Ctrl+D[/b] drops the earlier turns · " if self.preview.alone_payload is not None else ""
            yield Static(
                f"[b]Ctrl+S[/b] sends · {drop}[b]Esc[/b] keeps it local · [b]Tab[/b] moves between the "
                "buttons, [b]Enter[/b] presses the highlighted one",
                classes="hint",
                id="hint",
            )
            yield TextArea(self.preview.payload, read_only=True, id="payload")
            with Horizontal(classes="buttons"):
                yield Button("Send", variant="warning", id="send")
                if self.preview.alone_payload is not None:
                    yield Button("Drop earlier turns", id="toggle")
                yield Button("Keep local", variant="primary", id="keep")

    def on_mount(self) -> None:
        self._show()
        self.query_one("#keep", Button).focus()

    @property
    def payload(self) -> str:
        return self.preview.alone_payload if self.alone else self.preview.payload

    def _show(self) -> None:
        self.query_one("#context", Static).update(self._context_text())
        size = len(self.payload.encode())
        self.query_one("#size", Static).update(
            f"The request body, exactly as below: {size} bytes (HTTP headers go with it)."
        )
        self.query_one("#payload", TextArea).text = self.payload
        if self.preview.alone_payload is not None:
            label = "Include earlier turns" if self.alone else "Drop earlier turns"
            self.query_one("#toggle", Button).label = label

    def _context_text(self) -> str:
        preview = self.preview
        lines = []
        if self.alone or not preview.earlier:
            lines.append("Carries this message only.")
        else:
            count = len(preview.earlier)
            lines.append(
                f"Carries {count} earlier message{'s' if count != 1 else ''} ({preview.context}); "
                "Ctrl+D sends this message alone:"
            )
            lines += [f"  • {line}" for line in preview.earlier]
        if preview.held_before_opt_in:
            held = preview.held_before_opt_in
            lines.append(
                f"{held} earlier message{'s' if held != 1 else ''} written before this conversation "
                "opted in to the cloud stay here (only \"whole conversation\" sends them)."
            )
        return "\n".join(lines)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "send":
            self.action_send()
        elif event.button.id == "toggle":
            self.action_toggle_earlier()
        else:
            self.action_keep_local()

    def action_toggle_earlier(self) -> None:
        if self.preview.alone_payload is None:
            return
        self.alone = not self.alone
        self._show()

    def action_send(self) -> None:
        from offload.router import Approval

        self.dismiss(Approval.SEND_ALONE if self.alone else Approval.SEND)

    def action_keep_local(self) -> None:
        from offload.router import Approval

        self.dismiss(Approval.KEEP_LOCAL)
