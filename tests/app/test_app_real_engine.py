"""The chat on the real engine and the embedded model, through the real router: no stand-ins.
Skipped until engine.loader and assets/models/tandem-nano land."""

from __future__ import annotations

import importlib.util

import pytest
from app_helpers import SIZE, until_ready

from app.local_models import embedded_model, open_model
from app.tui.widgets.message import MessageView

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        importlib.util.find_spec("engine.loader") is None or not embedded_model().path.is_dir(),
        reason="needs engine.loader and assets/models/tandem-nano (not landed yet)",
    ),
]


class KeptOpen:
    """The session's engine, lent to one app: the app's close() must not close it for the next test."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def close(self) -> None:
        pass


class HeldAfterFirstToken(KeptOpen):
    """The real engine, held after its first token until the reply is cancelled: tandem-nano
    answers in milliseconds, faster than a key press can land mid-reply."""

    def generate(self, request, cancel=None):
        events = self._engine.generate(request, cancel)
        yield next(events)
        if cancel is not None:
            cancel.wait(timeout=10)
        yield from events


@pytest.fixture(scope="session")
def nano_engine():
    engine = open_model(embedded_model())
    yield engine
    engine.close()


@pytest.fixture
def real_app(make_app, nano_engine):
    return make_app(open_engine=lambda model, progress: KeptOpen(nano_engine), load_engine=True)


async def test_a_question_is_answered_locally_on_the_embedded_model(real_app):
    async with real_app.run_test(size=SIZE) as pilot:
        app = pilot.app
        await until_ready(pilot)
        assert app.engine is not None
        await pilot.press(*"What is Tandem?", "enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        reply = app.chat.query(MessageView).last()
        assert reply.content.strip()
        assert reply.meta.startswith("⌂ local · tandem-nano")
        assert "tok/s" in reply.meta
        stored = app.store.messages(app.chat.conversation_id)[-1]
        assert (stored.route, stored.status) == ("local", "complete")


async def test_escape_stops_the_embedded_model_mid_reply(make_app, nano_engine):
    held = make_app(open_engine=lambda model, progress: HeldAfterFirstToken(nano_engine), load_engine=True)
    async with held.run_test(size=SIZE) as pilot:
        app = pilot.app
        await until_ready(pilot)
        await pilot.press(*"Explain local-first software in detail.", "enter")
        for _ in range(400):
            if app.chat.reply_view is not None and app.chat.reply_view.content:
                break
            await pilot.pause(0.01)
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        stored = app.store.messages(app.chat.conversation_id)[-1]
        assert stored.status == "interrupted"
        assert "interrupted" in app.chat.query(MessageView).last().meta
