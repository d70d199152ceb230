"""The status bar: the local model's state on the left; the privacy mode and the offline indicator
on the right."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widgets import Static


class StatusBar(Horizontal):
    engine_status: reactive[str] = reactive("starting…")
    mode: reactive[str] = reactive("ask")
    offline: reactive[bool] = reactive(False)
    network_detail: reactive[str] = reactive("online")

    def compose(self) -> ComposeResult:
        yield Static(id="engine-status")
        yield Static(id="mode-badge")
        yield Static(id="network-badge")

    def watch_engine_status(self, status: str) -> None:
        self.query_one("#engine-status", Static).update(status)

    def watch_mode(self, mode: str) -> None:
        self.query_one("#mode-badge", Static).update(f"[@click=screen.cycle_mode]mode: {mode}[/]")

    def watch_offline(self, offline: bool) -> None:
        self._show_network()

    def watch_network_detail(self, detail: str) -> None:
        self._show_network()

    def _show_network(self) -> None:
        badge = self.query_one("#network-badge", Static)
        badge.update(f"● offline: {self.network_detail}" if self.offline else "● online")
        badge.set_class(self.offline, "-offline")
