"""API keys, kept in the keyring through offload.keys (the screen names its backend): shows where
each provider's key comes from (never the key), and sets or removes one."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Select, Static


class KeysScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="dismiss")]

    def __init__(self, providers: Sequence[str]) -> None:
        """`providers`: those the settings name; any other with a stored key is listed too."""
        super().__init__()
        self.providers = list(providers)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static("[b]API keys[/b]: environment variables override stored keys.", id="backend")
            yield DataTable(id="sources", cursor_type="row")
            with Horizontal(classes="row"):
                yield Select([(p, p) for p in self.providers], value=self.providers[0], allow_blank=False, id="provider")
                yield Input(placeholder="paste the key", password=True, id="secret")
            yield Static("", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Save key", variant="primary", id="set")
                yield Button("Remove key", variant="error", id="remove")
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#sources", DataTable).add_columns("provider", "key from")
        self._refresh()

    def _refresh(self) -> None:
        """Where each provider's key comes from; a keyring that cannot be read is named, not fatal."""
        from offload import keys

        table = self.query_one("#sources", DataTable)
        table.clear()
        listed = keys.listing(self.providers)  # the same rows as `tandem keys list`
        for provider, where in listed.rows:
            table.add_row(provider, where, key=provider)
        if listed.problem is not None:
            self.query_one("#error", Static).update(f"⚠ {listed.problem}")
            return
        backend = keys.backend()
        warning = (
            "\n[b]⚠ not encrypted[/b]: anyone who can read that file can read the keys; prefer "
            "environment variables or an encrypted keyring." if backend.plaintext else ""
        )
        self.query_one("#backend", Static).update(
            f"[b]API keys[/b] are stored in {escape(backend.describe())}; environment variables "
            f"override them.{warning}"
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        from offload import keys
        from offload.errors import KeyStoreError

        provider = str(self.query_one("#provider", Select).value)
        error = self.query_one("#error", Static)
        error.update("")
        if event.button.id == "close":
            self.dismiss(None)
            return
        try:
            if event.button.id == "set":
                secret = self.query_one("#secret", Input)
                if not secret.value.strip():
                    error.update("⚠ Paste a key first.")
                    return
                keys.set_key(provider, secret.value.strip())
                secret.value = ""
                backend = keys.backend()
                self.notify(
                    f"Saved the {provider} key in {backend.describe()}.",
                    severity="warning" if backend.plaintext else "information",
                )
            elif keys.remove_key(provider):
                self.notify(f"Removed the {provider} key from the keyring.")
            else:
                self.notify(f"The keyring holds no {provider} key.", severity="warning")
        except KeyStoreError as problem:
            error.update(f"⚠ {problem}")
        self._refresh()
