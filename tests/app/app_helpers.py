"""Helpers for the app's tests: ScriptedRouter, a named stand-in for the router and a cloud until
both can run here; LoopbackCloud, a real OpenAI-compatible server on 127.0.0.1; scripted replies."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from offload.events import Decision, Discard, Egress, RouterEvent, Token, TurnDone
from offload.router import Preview, Turn

SIZE = (110, 32)


async def until_ready(pilot) -> None:
    """Wait until the history is open and every start-up worker (history, then model) is done."""
    app = pilot.app
    for _ in range(500):
        if app.store is not None and all(worker.is_finished for worker in app.workers):
            break
        await pilot.pause(0.01)
    await pilot.pause()


class ScriptedRouter:
    """FAKE, standing in for offload.router.Router and a cloud provider: it replays RouterEvents as
    the router contract describes them, asks `approve` when given a Preview, and honours cancel.
    The real router with the embedded model and a loopback cloud replace it as they land."""

    def __init__(
        self,
        events: Sequence[RouterEvent] = (),
        preview: Preview | None = None,
        declined: Sequence[RouterEvent] = (),
        wait_for_cancel: bool = False,
    ) -> None:
        self.events = list(events)
        self.preview = preview
        self.declined = list(declined)
        self.wait_for_cancel = wait_for_cancel
        self.turns: list[Turn] = []
        self.approvals: list[bool] = []
        self.started = threading.Event()
        self.seen_in_store: list[Any] = []

    def run(self, turn: Turn, approve=None, cancel: threading.Event | None = None):
        self.turns.append(turn)
        self.started.set()
        if self.wait_for_cancel:
            yield Token("partial ", "local")
            assert cancel is not None
            cancel.wait(10)
            yield TurnDone("local", "tandem-nano", "tvm", "interrupted", "cancelled by you")
            return
        events = self.events
        if self.preview is not None:
            answer = bool(approve(self.preview))
            self.approvals.append(answer)
            if not answer:
                events = self.declined
        yield from events

    def factory(self) -> Callable[[Any, Any, bool], ScriptedRouter]:
        return lambda engine, settings, offline: self


class NoEngine:
    """FAKE engine handle: the scripted router never calls it; it only marks the model as ready."""

    def close(self) -> None:
        pass


def ready_opener(model, on_progress):
    return NoEngine()


def local_reply(text: str = "Paris is the capital of France.") -> list[RouterEvent]:
    return [
        Decision("local", "every turn starts local"),
        *(Token(word + " ", "local", -0.05) for word in text.split(" ")),
        TurnDone("local", "tandem-nano", "tvm", "complete", "confident local answer", 0.93, 12, 7, 4.0, 41.5),
    ]


def cloud_reply(text: str = "The cloud answer.") -> list[RouterEvent]:
    return [
        Decision("local", "every turn starts local"),
        Token("I am not ", "local", -2.5),
        Discard("low local confidence (0.21)"),
        Decision("cloud", "escalated: low local confidence (0.21)", 0.21),
        Egress("openai", "api.openai.com", '{"messages": [{"content": "mail [EMAIL_1]"}]}', 64, 128, {"EMAIL": 1}),
        Token(text, "cloud"),
        TurnDone(
            "cloud", "gpt-4o-mini", "openai", "complete", "escalated: low local confidence (0.21)", 0.21, 30, 5, 300.0, 55.0
        ),
    ]


class LoopbackCloud:
    """A real OpenAI-compatible server on 127.0.0.1: streams `reply` as SSE chunks and keeps every
    request body it received, exactly as it arrived."""

    def __init__(self, reply: str) -> None:
        import http.server

        cloud = self
        self.reply = reply
        self.bodies: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                cloud.bodies.append(self.rfile.read(int(self.headers["content-length"])).decode())
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                words = cloud.reply.split(" ")
                for index, word in enumerate(words):
                    text = word if index == len(words) - 1 else word + " "
                    self._event({"model": "loopback-model", "choices": [{"delta": {"content": text}}]})
                self._event({"choices": [{"delta": {}, "finish_reason": "stop"}]})
                self._event({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": len(words)}})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, chunk: dict) -> None:
                import json

                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
