"""The network choke point: offline mode refuses before any socket or DNS lookup (proved by an
audit hook), loopback stays reachable, and reachability is detected, re-probed and observable."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from offload_faults import EVENTS, make_provider, stream

from offload.errors import OfflineError, Unreachable
from offload.network import Network, NetworkState, is_loopback
from offload.providers import StreamEnd

_attempts: list[tuple[str, object]] | None = None


def _record_socket_use(event: str, args: tuple) -> None:
    if _attempts is not None and event in ("socket.connect", "socket.getaddrinfo"):
        _attempts.append((event, args[1] if event == "socket.connect" else args[0]))


sys.addaudithook(_record_socket_use)


@contextmanager
def socket_attempts() -> Iterator[list[tuple[str, object]]]:
    """Every connect and name lookup any thread attempts inside the block."""
    global _attempts
    _attempts = []
    try:
        yield _attempts
    finally:
        _attempts = None


def closed_port() -> int:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return unused.getsockname()[1]


@pytest.mark.parametrize("base", ["http://192.0.2.1:8000", "https://api.example.com"])
def test_offline_refuses_before_any_connect_or_lookup(kind, base):
    provider = make_provider(kind, base, network=Network(offline=True))
    with socket_attempts() as attempts, pytest.raises(OfflineError) as raised:
        list(provider.stream_chat([{"role": "user", "content": "hi"}], "m", 8, 0.0))
    assert attempts == []
    assert raised.value.exchange is None
    assert "Offline mode is on" in str(raised.value)


def test_the_guard_sits_at_the_socket_layer_of_every_client():
    network = Network(offline=True)
    with socket_attempts() as attempts, network.client(httpx.Timeout(1.0)) as client:
        with pytest.raises(OfflineError):
            client.get("http://192.0.2.1/")
        with pytest.raises(OfflineError):
            client.get("https://example.org/")  # a redirect or any other code path lands here too
    assert attempts == []


def test_loopback_peers_stay_reachable_offline(server):
    server.play(stream(EVENTS["openai"](["on-prem"])))
    network = Network(offline=True)
    with socket_attempts() as attempts:
        events = list(make_provider("openai", server.base, network=network).stream_chat([], "m", 8, 0.0))
    assert isinstance(events[-1], StreamEnd)
    assert [target for event, target in attempts if event == "socket.connect"] == [("127.0.0.1", server.port)]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("::ffff:127.0.0.1", True), ("192.0.2.1", False), ("10.0.0.5", False), ("api.openai.com", False),
     ("localhost.evil.example", False), ("0.0.0.0", False)],
)
def test_only_literal_loopback_counts_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_switch_is_observable():
    network = Network()
    seen: list[NetworkState] = []
    unsubscribe = network.subscribe(seen.append)
    network.set_offline(True)
    network.set_offline(True)  # no change, no notification
    network.set_offline(False)
    unsubscribe()
    network.set_offline(True)
    assert [(s.forced_offline, s.online, s.detail) for s in seen] == [
        (True, False, "offline mode is on"),
        (False, True, "online"),
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_connect_failures_mark_the_network_down_and_a_rate_limited_probe_brings_it_back():
    clock = FakeClock()
    network = Network(probe_interval=30.0, probe_timeout=0.5, clock=clock)
    seen: list[NetworkState] = []
    network.subscribe(seen.append)
    port = closed_port()

    events = make_provider("openai", f"http://127.0.0.1:{port}", network=network).stream_chat([], "m", 8, 0.0)
    with pytest.raises(Unreachable):
        list(events)
    assert not network.online
    assert network.state.detail == f"cannot reach 127.0.0.1:{port}"
    assert len(seen) == 1

    with socket_attempts() as attempts:
        clock.now += 10
        assert not network.check().online  # too soon: no probe at all
    assert attempts == []

    with socket.create_server(("127.0.0.1", port)):
        with socket_attempts() as attempts:
            clock.now += 25
            assert network.check().online
            assert network.check().online  # already up: no second probe
        assert [a for a in attempts if a[0] == "socket.connect"] == [("socket.connect", ("127.0.0.1", port))]
    assert [s.online for s in seen] == [False, True]


def test_a_probe_that_still_fails_waits_another_interval():
    clock = FakeClock()
    network = Network(probe_interval=30.0, probe_timeout=0.5, clock=clock)
    port = closed_port()
    with pytest.raises(Unreachable):
        list(make_provider("openai", f"http://127.0.0.1:{port}", network=network).stream_chat([], "m", 8, 0.0))
    with socket_attempts() as attempts:
        clock.now += 31
        assert not network.check().online
        clock.now += 5
        assert not network.check().online
    assert len([a for a in attempts if a[0] == "socket.connect"]) == 1


def test_forced_offline_never_probes():
    clock = FakeClock()
    network = Network(probe_interval=1.0, clock=clock)
    with pytest.raises(Unreachable):
        list(make_provider("openai", f"http://127.0.0.1:{closed_port()}", network=network).stream_chat([], "m", 8, 0.0))
    network.set_offline(True)
    with socket_attempts() as attempts:
        clock.now += 100
        assert not network.check().online
    assert attempts == []
