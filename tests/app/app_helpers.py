"""Helpers for the app's tests: wrappers lending the session's real engine to an app (and holding
or breaking it on cue), LoopbackCloud, a real OpenAI-compatible server on 127.0.0.1, and the
NoEngine stand-in the snapshots use."""

from __future__ import annotations

import threading

SIZE = (110, 32)


async def until_ready(pilot) -> None:
    """Wait until the history is open and every start-up worker (history, then model) is done."""
    app = pilot.app
    for _ in range(500):
        if app.store is not None and all(worker.is_finished for worker in app.workers):
            break
        await pilot.pause(0.01)
    await pilot.pause()


async def until(pilot, condition, what: str, timeout: float = 30.0) -> None:
    """Wait on the app's own state, not a fixed time: poll `condition` between frames until it
    holds (a loaded machine only makes this slower, never wrong); fail naming `what` otherwise."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.01)
    await pilot.pause()  # and let the frame that shows it be painted


class KeptOpen:
    """The session's real engine, lent to one app or router: the app's close() must not close it
    for the next test."""

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


class FailsAfterFirstToken(KeptOpen):
    """The real engine with an injected fault: after its first token the device is "lost"."""

    def generate(self, request, cancel=None):
        yield next(iter(self._engine.generate(request, cancel)))
        raise RuntimeError("device lost")


class NoEngine:
    """FAKE engine handle for the SVG snapshots, which run no turn: it only marks the model as ready."""

    def close(self) -> None:
        pass


def ready_opener(model, on_progress):
    return NoEngine()


class LoopbackCloud:
    """A real OpenAI-compatible server on 127.0.0.1: streams `reply` as SSE chunks and keeps every
    request body it received, exactly as it arrived."""

    def __init__(self, reply: str, status: int = 200) -> None:
        import http.server

        cloud = self
        self.reply = reply
        self.status = status  # anything but 200 answers that status with an error body: a failing cloud
        self.bodies: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                cloud.bodies.append(self.rfile.read(int(self.headers["content-length"])).decode())
                if cloud.status != 200:
                    self._fail(cloud.status)
                    return
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

            def _fail(self, status: int) -> None:
                body = b'{"error": {"message": "the loopback cloud is down"}}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.send_header("retry-after", "0")  # retried at once: the test need not wait out backoff
                self.end_headers()
                self.wfile.write(body)

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
