"""One message in the chat: who wrote it, where an assistant reply ran and why, and the Markdown body.
A focused message copies itself (c) or its code blocks, one per press (b)."""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

CODE_BLOCK = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)


def code_blocks(markdown: str) -> list[str]:
    """The fenced code blocks of a Markdown text, without their fences."""
    return [match.group(2) for match in CODE_BLOCK.finditer(markdown)]


class MessageView(Vertical, can_focus=True):
    BINDINGS = [
        Binding("c", "copy_message", "Copy message", id="copy_message"),
        Binding("b", "copy_code", "Copy code block", id="copy_code"),
    ]

    def __init__(self, role: str, content: str = "", meta: str = "", message_id: int | None = None) -> None:
        super().__init__(classes=f"message -{role}")
        self.role = role
        self.content = content
        self.meta = meta
        self.message_id = message_id
        self._stream: MarkdownStream | None = None
        self._next_code_block = 0
        self._notes: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(self.meta or ("you" if self.role == "user" else ""), classes="meta")
        yield Markdown(self.content, classes="body")
        yield Static("", classes="notes")

    @property
    def body(self) -> Markdown:
        return self.query_one(".body", Markdown)

    def set_meta(self, meta: str) -> None:
        self.meta = meta
        self.query_one(".meta", Static).update(meta)

    def add_note(self, note: str) -> None:
        notes = self.query_one(".notes", Static)
        self._notes.append(note)
        notes.update("\n".join(f"⚑ {line}" for line in self._notes))
        notes.add_class("-shown")

    async def write(self, text: str) -> None:
        """Append streamed text; the stream batches Markdown updates so long replies stay fast."""
        if self._stream is None:
            self._stream = Markdown.get_stream(self.body)
        self.content += text
        await self._stream.write(text)

    async def restart(self) -> None:
        """Withdraw what streamed so far (the local draft is being replaced)."""
        await self._stop_stream()
        self.content = ""
        await self.body.update("")

    async def finish(self, final_text: str | None = None) -> None:
        """End streaming with one full update, which also renders code blocks cut mid-stream."""
        await self._stop_stream()
        if final_text is not None:
            self.content = final_text
        await self.body.update(self.content)

    async def _stop_stream(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None

    def action_copy_message(self) -> None:
        self.app.copy_to_clipboard(self.content)
        self.notify("Copied the message.")

    def action_copy_code(self) -> None:
        blocks = code_blocks(self.content)
        if not blocks:
            self.notify("This message has no code block.", severity="warning")
            return
        index = self._next_code_block % len(blocks)
        self.app.copy_to_clipboard(blocks[index])
        self._next_code_block = index + 1
        self.notify(f"Copied code block {index + 1} of {len(blocks)}.")
