"""Search results over all history; picking one dismisses with (conversation_id, message_id)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Label, ListItem, ListView, Static

from app.store.search import MARK_CLOSE, MARK_OPEN


class HitItem(ListItem):
    def __init__(self, hit: Any) -> None:
        who = "you" if hit.role == "user" else hit.role
        super().__init__(Static(f"[b]{escape(hit.title)}[/b] · {who}\n{_highlight(hit.snippet)}"))
        self.hit = hit


def _highlight(snippet: str) -> str:
    """Matched words come between the store's marks; show them highlighted."""
    return escape(snippet).replace(MARK_OPEN, "[b reverse]").replace(MARK_CLOSE, "[/]")


class SearchScreen(ModalScreen[tuple[int, int] | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="dismiss")]

    def __init__(self, query: str, hits: Sequence[Any]) -> None:
        super().__init__()
        self.search_query = query
        self.hits = list(hits)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            count = len(self.hits)
            yield Label(f"{count} result{'s' if count != 1 else ''} for “{escape(self.search_query)}”", id="summary")
            yield ListView(*(HitItem(hit) for hit in self.hits), id="hits")

    def on_mount(self) -> None:
        self.query_one("#hits", ListView).focus()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        hit = event.item.hit  # type: ignore[attr-defined]
        self.dismiss((hit.conversation_id, hit.message_id))
