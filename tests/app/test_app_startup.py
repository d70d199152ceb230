"""Start-up: the chat paints at once on a fresh home, the model loads behind a status line, and
nothing heavy is imported before the first paint."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from app_helpers import SIZE, until, until_ready

from app.local_models import ModelUnavailable
from app.tui.screens.chat import ChatScreen
from app.tui.widgets.status_bar import StatusBar
from engine.errors import ModelFileError

pytestmark = pytest.mark.anyio
REPO_ROOT = Path(__file__).resolve().parents[2]


def engine_status(app) -> str:
    return str(app.chat.query_one(StatusBar).query_one("#engine-status").render())


async def test_a_first_run_opens_the_chat_with_no_questions(make_app, db_path):
    async with make_app(store=None).run_test(size=SIZE) as pilot:
        app = pilot.app
        assert isinstance(app.screen, ChatScreen)
        await until_ready(pilot)
        assert app.chat.query_one("#prompt").has_focus
        assert "New conversation" in str(app.chat.query_one("#header").render())
        assert app.settings.mode == "ask"
    assert db_path.exists()


async def test_the_model_loads_in_the_background_with_its_progress_shown(make_app):
    release = threading.Event()
    requested = []

    def slow_opener(model, on_progress):
        requested.append(model)
        on_progress("compiling", 0.4)
        release.wait(10)
        raise ModelUnavailable("stopped by the test")

    async with make_app(open_engine=slow_opener, load_engine=True).run_test(size=SIZE) as pilot:
        app = pilot.app
        await until(pilot, lambda: engine_status(app) == "loading tandem-nano… compiling 40%", "the progress")
        assert app.screen is app.chat  # the UI is live while the model loads
        await pilot.press("ctrl+n")
        assert app.store.list_conversations()
        release.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert engine_status(app) == "local model unavailable: stopped by the test"
    assert requested[0].path == Path(__import__("assets").embedded_model_dir())


@pytest.mark.parametrize(
    ("raised", "shown"),
    [
        (ModelFileError("model.gguf is truncated; download it again."), "model.gguf is truncated; download it again."),
        (TypeError("a fault"), "an unexpected TypeError: a fault (a fault in Tandem; please report it)"),
    ],
)
async def test_a_model_that_fails_to_load_is_explained_by_the_errors_type(make_app, raised, shown, caplog):
    """The engine's errors name their own fix; anything else is caught last, logged, and said to be unexpected."""

    def failing_opener(model, on_progress):
        raise raised

    async with make_app(open_engine=failing_opener, load_engine=True).run_test(size=SIZE) as pilot:
        app = pilot.app
        await until(pilot, lambda: "failed to load" in engine_status(app), "the failure")
        assert engine_status(app) == f"tandem-nano failed to load: {shown}"
    logged = [r for r in caplog.records if r.name == "tandem"]
    assert bool(logged) == isinstance(raised, TypeError)


async def test_a_damaged_database_exits_with_a_message_not_a_traceback(make_app, db_path):
    db_path.write_bytes(b"this is not sqlite" * 100)
    app = make_app(store=None)  # opened by the app, in the background, as `tandem` does
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            if app.return_code is not None:
                break
            await pilot.pause(0.05)
    assert app.return_code == 1
    assert db_path.read_bytes() == b"this is not sqlite" * 100


def test_importing_the_tui_loads_no_engine_or_tvm():
    code = (
        "import sys, app.cli, app.tui.app, app.tui.screens.chat; "
        "heavy = [m for m in ('tvm', 'torch', 'engine.loader', 'transformers', 'httpx') if m in sys.modules]; "
        "print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
