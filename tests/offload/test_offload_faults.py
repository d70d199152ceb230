"""Every failure a provider can meet ends in its typed error, retried only before the first token,
and never repeats text already streamed. Each test runs against a real server on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import pytest
from offload_faults import API_KEY, EVENTS, make_provider, respond, silent, stream

from offload.errors import (
    AuthError,
    BadRequest,
    ConnectionLost,
    ConnectTimeout,
    ProtocolError,
    RateLimited,
    ReadTimeout,
    ResponseTooLarge,
    ServerError,
    Unreachable,
)
from offload.providers import RetryPolicy, StreamEnd, TextDelta, Timeouts

MESSAGES = [{"role": "user", "content": "hello"}]


def run(provider):
    """Consume a call as the router does; return the text shown and the error (or the StreamEnd)."""
    shown = []
    try:
        for event in provider.stream_chat(MESSAGES, "m", 64, 0.0):
            if isinstance(event, TextDelta):
                shown.append(event.text)
            else:
                return "".join(shown), event
    except Exception as error:  # noqa: BLE001 - the test inspects whatever was raised
        return "".join(shown), error
    raise AssertionError("a call must end in a StreamEnd or an error")


def assert_user_facing(error: Exception) -> None:
    message = str(error)
    assert "\n" not in message and message.endswith(".")
    assert API_KEY not in message and "SECRET" not in message


def test_429_with_retry_after_is_waited_out_then_retried(server, kind):
    server.play(respond(429, '{"error": {"message": "slow down"}}', {"retry-after": "1"}), stream(EVENTS[kind](["fine"])))
    started = time.monotonic()
    text, end = run(make_provider(kind, server.base))
    assert isinstance(end, StreamEnd)
    assert text == "fine"
    assert len(server.received) == 2
    assert time.monotonic() - started >= 1.0


def test_429_that_persists_ends_in_rate_limited(server):
    server.play(respond(429, "", {"retry-after": "0"}))
    text, error = run(make_provider("openai", server.base))
    assert isinstance(error, RateLimited)
    assert len(server.received) == 3
    assert text == ""
    assert_user_facing(error)


def test_retry_after_beyond_the_limit_is_not_waited_for(server):
    server.play(respond(429, "", {"retry-after": "3600"}))
    started = time.monotonic()
    _, error = run(make_provider("openai", server.base))
    assert isinstance(error, RateLimited) and error.retry_after == 3600
    assert len(server.received) == 1
    assert time.monotonic() - started < 1.0


def test_500_then_success_is_retried(server, kind):
    server.play(respond(500, "boom"), stream(EVENTS[kind](["after ", "retry"])))
    text, end = run(make_provider(kind, server.base))
    assert isinstance(end, StreamEnd)
    assert text == "after retry"
    assert len(server.received) == 2
    # the ledger counts both attempts: every byte that left
    assert end.exchange.bytes_sent == server.bytes_in


def test_persistent_5xx_ends_in_server_error_after_all_attempts(server):
    server.play(respond(503, '{"error": {"message": "overloaded"}}'))
    _, error = run(make_provider("openai", server.base))
    assert isinstance(error, ServerError) and error.status == 503
    assert len(server.received) == 3
    assert "overloaded" in str(error)
    assert_user_facing(error)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_not_retried(server, kind, status):
    # Some APIs echo the key back in the error: it must not reach the message.
    server.play(respond(status, f'{{"error": {{"message": "Incorrect API key provided: {API_KEY}"}}}}'))
    text, error = run(make_provider(kind, server.base))
    assert isinstance(error, AuthError) and error.status == status
    assert len(server.received) == 1
    assert f"tandem keys set {kind}" in str(error)
    assert_user_facing(error)
    assert error.exchange is not None and error.exchange.bytes_sent == server.bytes_in


def test_other_4xx_is_a_bad_request_with_the_servers_reason_scrubbed(server):
    server.play(respond(400, f'{{"error": {{"message": "model nope does not exist for key {API_KEY}"}}}}'))
    _, error = run(make_provider("openai", server.base))
    assert isinstance(error, BadRequest)
    assert "model nope does not exist" in str(error)
    assert_user_facing(error)


def test_connect_timeout_is_retried_then_typed(unaccepting_port, kind):
    provider = make_provider(
        kind, f"http://127.0.0.1:{unaccepting_port}", timeouts=Timeouts(connect=0.3, read=2.0),
        retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01),
    )
    started = time.monotonic()
    text, error = run(provider)
    assert isinstance(error, ConnectTimeout)
    assert 0.6 <= time.monotonic() - started < 3
    assert error.exchange is None
    assert_user_facing(error)


def test_connection_refused_is_unreachable():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    _, error = run(make_provider("openai", f"http://127.0.0.1:{port}"))
    assert isinstance(error, Unreachable)
    assert "connection refused" in str(error).lower()
    assert_user_facing(error)


def test_read_timeout_before_any_reply_is_not_retried(server, kind):
    server.play(silent)
    text, error = run(make_provider(kind, server.base, timeouts=Timeouts(connect=2.0, read=0.4)))
    assert isinstance(error, ReadTimeout)
    assert len(server.received) == 1
    assert_user_facing(error)


def test_read_timeout_mid_stream_keeps_what_was_shown_once(server, kind):
    server.play(stream(EVENTS[kind](["partial ", "reply"], done=False), end="hang"))
    text, error = run(make_provider(kind, server.base, timeouts=Timeouts(connect=2.0, read=0.4)))
    assert isinstance(error, ReadTimeout)
    assert text == "partial reply"
    assert len(server.received) == 1


def test_reset_mid_stream_is_connection_lost_without_retry_or_repeat(server, kind):
    server.play(stream(EVENTS[kind](["half ", "a "], done=False), end="reset"), stream(EVENTS[kind](["WRONG"])))
    text, error = run(make_provider(kind, server.base))
    assert isinstance(error, ConnectionLost)
    assert text == "half a "
    assert len(server.received) == 1
    assert error.exchange is not None and error.exchange.bytes_sent == server.bytes_in
    assert_user_facing(error)


def test_stream_that_ends_without_finishing_is_connection_lost(server, kind):
    server.play(stream(EVENTS[kind](["cut"], done=False), end="close"))
    text, error = run(make_provider(kind, server.base))
    assert isinstance(error, ConnectionLost)
    assert text == "cut"


@pytest.mark.parametrize(
    "garbage",
    ["data: {not json\n\n", 'data: ["a", "list"]\n\n', 'data: {"choices": "nope"}\n\n'],
    ids=["bad-json", "not-an-object", "wrong-shape"],
)
def test_malformed_events_are_protocol_errors(server, garbage):
    server.play(stream([*EVENTS["openai"](["ok "], done=False), garbage, *EVENTS["openai"](["WRONG"])]))
    text, error = run(make_provider("openai", server.base))
    assert isinstance(error, ProtocolError)
    assert text == "ok "
    assert len(server.received) == 1
    assert_user_facing(error)


def test_malformed_anthropic_delta_is_a_protocol_error(server):
    server.play(stream([*EVENTS["anthropic"](["ok "], done=False), 'event: content_block_delta\ndata: {"delta": 3}\n\n']))
    text, error = run(make_provider("anthropic", server.base))
    assert isinstance(error, ProtocolError)
    assert text == "ok "


def test_a_page_instead_of_an_event_stream_is_a_protocol_error(server, kind):
    server.play(stream(["<html>captive portal</html>"], content_type="text/html"))
    text, error = run(make_provider(kind, server.base))
    assert isinstance(error, ProtocolError)
    assert "text/html" in str(error)
    assert text == ""


def test_oversized_response_is_cut_off(server, kind):
    server.play(stream(EVENTS[kind](["x" * 1000] * 200)))
    text, error = run(make_provider(kind, server.base, max_response_bytes=20_000))
    assert isinstance(error, ResponseTooLarge)
    assert set(text) <= {"x"} and len(text) < 20_000 and len(text) % 1000 == 0
    assert len(server.received) == 1
    assert_user_facing(error)


def test_error_reported_inside_the_stream_is_a_server_error(server, kind):
    if kind == "openai":
        report = 'data: {"error": {"message": "upstream failed"}}\n\n'
    else:
        report = 'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "upstream failed"}}\n\n'
    server.play(stream([*EVENTS[kind](["so far"], done=False), report]), stream(EVENTS[kind](["WRONG"])))
    text, error = run(make_provider(kind, server.base))
    assert isinstance(error, ServerError)
    assert "upstream failed" in str(error)
    assert text == "so far"
    assert len(server.received) == 1
