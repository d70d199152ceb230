"""The sidebar: a search box over all history and the list of conversations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView


class ConversationItem(ListItem):
    def __init__(self, conversation_id: int, title: str, archived: bool = False) -> None:
        super().__init__(Label(title), classes="-archived" if archived else "")
        self.conversation_id = conversation_id
        self.title = title


class Sidebar(Vertical):
    class Selected(Message):
        """The user picked a conversation."""

        def __init__(self, conversation_id: int) -> None:
            self.conversation_id = conversation_id
            super().__init__()

    class SearchSubmitted(Message):
        def __init__(self, query: str) -> None:
            self.query = query
            super().__init__()

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search history (Ctrl+F)", id="search")
        yield ListView(id="conversations")

    @property
    def list_view(self) -> ListView:
        return self.query_one("#conversations", ListView)

    async def show(self, conversations: Sequence[Any], current: int | None) -> None:
        """Replace the list with these conversations (records with id, title, archived)."""
        view = self.list_view
        await view.clear()
        items = [ConversationItem(c.id, c.title, bool(c.archived)) for c in conversations]
        await view.extend(items)
        ids = [item.conversation_id for item in items]
        if current in ids:
            view.index = ids.index(current)

    def titles(self) -> list[str]:
        return [item.title for item in self.list_view.query(ConversationItem)]

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Selected(event.item.conversation_id))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.post_message(self.SearchSubmitted(event.value.strip()))
