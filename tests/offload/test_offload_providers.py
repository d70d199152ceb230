"""Both provider kinds stream text and usage from a well-formed server, send exactly what they
preview, and account for every byte on the wire."""

from __future__ import annotations

import json
import threading
import time

import pytest
from offload_faults import API_KEY, EVENTS, make_provider, silent, stream

from engine.api import Usage
from offload.providers import StreamEnd, TextDelta, Timeouts

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi to [EMAIL_1]."}]


def collect(provider, cancel=None):
    events = list(provider.stream_chat(MESSAGES, "m-asked", 64, 0.2, cancel))
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events[-1]


def test_streams_text_then_usage(server, kind):
    server.play(stream(EVENTS[kind](["Hel", "lo ", "there"], usage=(12, 3))))
    text, end = collect(make_provider(kind, server.base))
    assert text == "Hello there"
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == "stop"
    assert end.usage == Usage(prompt_tokens=12, completion_tokens=3)
    assert end.model == "m-served"


def test_sends_exactly_the_previewed_payload_with_the_key_in_a_header(server, kind):
    server.play(stream(EVENTS[kind](["ok"])))
    provider = make_provider(kind, server.base)
    _, end = collect(provider)
    request = server.received[0]
    assert request.body.decode() == provider.payload(MESSAGES, "m-asked", 64, 0.2) == end.exchange.payload
    body = json.loads(request.body)
    assert body["stream"] is True and body["max_tokens"] == 64 and body["model"] == "m-asked"
    if kind == "openai":
        assert request.head == "POST /v1/chat/completions HTTP/1.1"
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        assert body["stream_options"] == {"include_usage": True}
        assert body["messages"] == MESSAGES
    else:
        assert request.head == "POST /v1/messages HTTP/1.1"
        assert request.headers["x-api-key"] == API_KEY
        assert request.headers["anthropic-version"]
        assert body["system"] == "Be brief."
        assert body["messages"] == MESSAGES[1:]
    assert API_KEY not in end.exchange.payload


def test_exchange_counts_the_bytes_on_the_wire(server, kind):
    server.play(stream(EVENTS[kind](["a", "b"])))
    _, end = collect(make_provider(kind, server.base))
    assert end.exchange.host == f"127.0.0.1:{server.port}"
    assert end.exchange.bytes_sent == server.bytes_in
    assert end.exchange.bytes_received == server.bytes_out


def test_usage_is_none_when_the_server_sends_none(server):
    server.play(stream(EVENTS["openai"](["x"], usage=None)))
    text, end = collect(make_provider("openai", server.base))
    assert (text, end.usage, end.finish_reason) == ("x", None, "stop")


def test_cancel_stops_the_stream_and_says_so(server, kind):
    server.play(stream(EVENTS[kind](["one", "two", "three"]), end="hang"))
    cancel = threading.Event()
    texts = []
    for event in make_provider(kind, server.base).stream_chat(MESSAGES, "m", 64, 0.2, cancel):
        if isinstance(event, TextDelta):
            texts.append(event.text)
            cancel.set()
        else:
            end = event
    assert texts == ["one"]
    assert end.finish_reason == "cancelled"


@pytest.mark.parametrize("stall", ["before-reply", "mid-stream"])
def test_cancel_cuts_a_stalled_connection_at_once(server, kind, stall):
    if stall == "before-reply":
        server.play(silent)
    else:
        server.play(stream(EVENTS[kind](["only this"], done=False), end="hang"))
    provider = make_provider(kind, server.base, timeouts=Timeouts(connect=2.0, read=30.0))
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    text, end = collect(provider, cancel)
    assert time.monotonic() - started < 3
    assert end.finish_reason == "cancelled"
    assert text == ("" if stall == "before-reply" else "only this")
    assert end.exchange.bytes_sent == server.bytes_in


def test_loopback_openai_compatible_server_needs_no_key(server):
    from offload.network import Network
    from offload.providers import OpenAICompatible

    server.play(stream(EVENTS["openai"](["fine"])))
    provider = OpenAICompatible(server.base + "/v1", None, name="vllm", network=Network())
    text, _ = collect(provider)
    assert text == "fine"
    assert "authorization" not in server.received[0].headers
