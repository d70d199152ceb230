"""The prompt input: a TextArea where Enter sends and Ctrl+J inserts a newline."""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    BINDINGS = [
        # Priority, so they win over TextArea's own handling of Enter.
        Binding("enter", "send", "Send", id="send", priority=True),
        Binding("ctrl+j", "newline", "Newline", id="newline", priority=True, show=False),
    ]

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            self.text = text
            super().__init__()

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)

    def action_send(self) -> None:
        # Keys that arrive in one burst ("text" then Enter from tmux, a paste ending in a newline)
        # are queued here while this priority binding runs at once: send after they are typed.
        self.call_later(self._send)

    def _send(self) -> None:
        text = self.text.strip()
        if text:
            self.post_message(self.Submitted(text))
            self.clear()

    async def _on_paste(self, event: events.Paste) -> None:
        """A paste is text, never keys: its control characters show as symbols, in order."""
        from app.tui.paste import visible

        event.prevent_default()  # TextArea's own handler would insert the controls raw
        if self.read_only:
            return
        result = self.replace(visible(event.text), *self.selection)
        self.move_cursor(result.end_location)
        self.focus()

    def action_newline(self) -> None:
        self.insert("\n")
