"""The egress ledger: every request that left the machine, and exactly what it carried."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static, TextArea


def _redactions(value: Any) -> str:
    if not value:
        return "none"
    return ", ".join(f"{kind}×{count}" for kind, count in dict(value).items())


def _context(record: Any) -> str:
    """The cloud-context policy and how many earlier messages went out with the request."""
    if record.context_policy is None:
        return "-"
    return f"{record.context_policy} +{record.context_messages or 0}"


class EgressScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="dismiss")]

    def __init__(self, records: Sequence[Any]) -> None:
        super().__init__()
        self.records = list(records)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            count = len(self.records)
            body, wire = sum(r.payload_bytes for r in self.records), sum(r.bytes_sent for r in self.records)
            # The same "body" figure as the ask-mode preview; the wire adds headers, TLS and retries.
            yield Static(
                f"[b]Egress ledger[/b]: {count} request{'s' if count != 1 else ''} left this machine: "
                f"{body} bytes of request body, {wire} bytes on the wire (headers, TLS and retries included)."
                if self.records
                else "[b]Egress ledger[/b]: nothing has left this machine.",
                id="summary",
            )
            yield DataTable(id="ledger", cursor_type="row", zebra_stripes=True)
            yield TextArea("", read_only=True, id="payload")

    def on_mount(self) -> None:
        table = self.query_one("#ledger", DataTable)
        table.add_columns("when", "conv", "provider", "host", "body", "wire out", "wire in", "context", "redactions")
        for index, record in enumerate(self.records):
            table.add_row(
                record.time.strftime("%Y-%m-%d %H:%M:%S"),
                str(record.conversation_id or "deleted"),
                record.provider,
                record.host,
                str(record.payload_bytes),
                str(record.bytes_sent),
                str(record.bytes_received),
                _context(record),
                _redactions(record.redactions),
                key=str(index),
            )
        if self.records:
            self._show(0)
        table.focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show(int(event.row_key.value))

    def _show(self, index: int) -> None:
        record = self.records[index]
        payload = record.payload if record.payload is not None else f"(payload not kept; sha256 {record.payload_sha256})"
        self.query_one("#payload", TextArea).text = payload
