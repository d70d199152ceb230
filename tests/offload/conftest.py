"""Fixtures for the transport tests: a fault-injecting server, a port that never accepts, both kinds."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest
from offload_faults import FaultServer


@pytest.fixture
def server() -> Iterator[FaultServer]:
    fault_server = FaultServer()
    yield fault_server
    fault_server.close()


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A port whose accept queue is full: the next connect hangs in SYN until it times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(address)
        if not select.select([], [filler], [], 0.2)[1]:
            filler.close()
            break
        fillers.append(filler)
    yield address[1]
    for filler in fillers:
        filler.close()
    listener.close()


@pytest.fixture(params=["openai", "anthropic"])
def kind(request) -> str:
    return request.param
