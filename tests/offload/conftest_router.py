"""Fixtures for the router tests, imported explicitly by tests/offload/test_router_*.py.

The recording server is a real OpenAI-compatible SSE server on 127.0.0.1, reached through the
real provider and network choke point. ScriptedEngine is a
fake, named as one: it stands in for the local engine where a test needs exact logprobs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.api import (
    Alternative,
    EngineInfo,
    FinishEvent,
    GenerationRequest,
    Timings,
    TokenEvent,
    Usage,
)
from engine.errors import ContextWindowExceeded
from offload.network import Network
from offload.providers import OpenAICompatible, RetryPolicy

REFUSAL = "I can't answer that here: it needs a bigger model."


# -- a recording OpenAI-compatible server ----------------------------------------------------


@dataclass
class RecordingServer:
    """Records every request body; streams back "Echo: <last user message>" in 3-char chunks,
    so placeholders in the request come back split across SSE events."""

    url: str = ""
    requests: list[dict] = field(default_factory=list)
    fail_with: int | None = None
    """An HTTP status to answer with instead of a stream (500, 401, ...)."""
    chunk_chars: int = 3

    @property
    def bodies(self) -> list[str]:
        return [r["raw"] for r in self.requests]


def _handler(state: RecordingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8")
            state.requests.append({"path": self.path, "raw": raw, "json": json.loads(raw)})
            if state.fail_with:
                self.send_response(state.fail_with)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"error": {"message": "injected failure"}}')
                return
            last = json.loads(raw)["messages"][-1]["content"]
            reply = f"Echo: {last}"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(0, len(reply), state.chunk_chars):
                delta = {"choices": [{"index": 0, "delta": {"content": reply[i : i + state.chunk_chars]}}]}
                self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler


@contextmanager
def serving_recorder() -> Iterator[RecordingServer]:
    state = RecordingServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    """A fresh server per test (starting one takes about a millisecond)."""
    with serving_recorder() as state:
        yield state


def loopback_provider(server: RecordingServer, network: Network | None = None) -> OpenAICompatible:
    """The real OpenAI-compatible provider, pointed at the recording server, one attempt only."""
    return OpenAICompatible(f"{server.url}/v1", name="loopback", network=network or Network(),
                            retry=RetryPolicy(attempts=1))


# -- a scripted local engine (fake) ------------------------------------------------------------


Script = Callable[[str], Sequence[tuple[str, float]]]
"""The last user message -> the answer's tokens as (text, logprob)."""


def confident(text: str) -> list[tuple[str, float]]:
    return [(piece, -0.02) for piece in _pieces(text)]


def unsure(text: str) -> list[tuple[str, float]]:
    return [(piece, -5.5) for piece in _pieces(text)]


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class ScriptedEngine:
    """FAKE engine: plays scripted tokens with chosen logprobs. Counts what it decoded, so tests
    can see an early abort stop the decode loop."""

    def __init__(self, script: Script, context_window: int = 512,
                 skills: tuple[str, ...] | None = None) -> None:
        self.script = script
        self._info = EngineInfo("fake", "scripted-nano", context_window, "cpu", "none", refusal=REFUSAL, skills=skills)
        self.decoded = 0
        self.generations = 0

    @property
    def info(self) -> EngineInfo:
        return self._info

    def count_prompt_tokens(self, messages) -> int:
        return sum(len(m["content"].split()) + 4 for m in messages)

    def generate(self, request: GenerationRequest, cancel=None):
        prompt_tokens = self.count_prompt_tokens(request.messages)
        if prompt_tokens >= self._info.context_window:
            raise ContextWindowExceeded(prompt_tokens, self._info.context_window)
        self.generations += 1
        tokens = list(self.script(request.messages[-1]["content"]))[: request.max_tokens]
        emitted = 0
        for i, (text, logprob) in enumerate(tokens):
            if cancel is not None and cancel.is_set():
                break
            self.decoded += 1
            emitted += 1
            alt = Alternative(i + 1000, "~", min(-0.5, logprob - 2.0) if logprob > -1 else logprob - 0.1)
            yield TokenEvent(text, i, logprob, (Alternative(i, text, logprob), alt))
        reason = "cancelled" if cancel is not None and cancel.is_set() else "stop"
        yield FinishEvent(reason, Usage(prompt_tokens, emitted), Timings(5.0, 100.0, 50.0))

    def close(self) -> None:
        pass


def token_events(pieces: Sequence[tuple[str, float]]) -> list[TokenEvent]:
    """TokenEvents as ScriptedEngine makes them, for feeding a StreamMonitor directly."""
    return [TokenEvent(text, i, logprob, (Alternative(i, text, logprob), Alternative(i + 1000, "~", logprob - 2.0)))
            for i, (text, logprob) in enumerate(pieces)]
