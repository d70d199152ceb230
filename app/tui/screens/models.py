"""The model picker: the embedded model, converted directories, and MLC LLM's runtime when installed.
Dismisses with the chosen LocalModel, or None."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import ListItem, ListView, Static

from app.local_models import LocalModel


class ModelItem(ListItem):
    def __init__(self, model: LocalModel, current: bool) -> None:
        marker = "●" if current else " "
        super().__init__(Static(f"{marker} [b]{model.label}[/b]  [dim]{model.detail}[/dim]"))
        self.model = model


class ModelPickerScreen(ModalScreen[LocalModel | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="dismiss")]

    def __init__(self, models: Sequence[LocalModel], current: LocalModel | None) -> None:
        super().__init__()
        self.models = list(models)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(
                "[b]Local model[/b]: convert a bigger one with "
                "`tandem models convert HF_DIR OUT_DIR --quantization q4f16_1`."
            )
            yield ListView(*(ModelItem(m, m == self.current) for m in self.models), id="models")

    def on_mount(self) -> None:
        self.query_one("#models", ListView).focus()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        self.dismiss(event.item.model)  # type: ignore[attr-defined]
