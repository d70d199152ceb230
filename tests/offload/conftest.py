"""Fixtures for the transport tests: a fault-injecting server, a port that never accepts, both\nprovider kinds, and a real engine for `tandem serve`."""

from __future__ import annotations

import importlib.util
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from offload_faults import FaultServer, build_tiny_checkpoint


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


def _require(*modules: str) -> None:
    for name in modules:
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"needs {name}, which is not on this branch yet (the local engine, issue 2)")


@pytest.fixture(scope="session")
def served_model_dir(tmp_path_factory) -> Path:
    """The embedded tandem-nano if it is present, else a tiny random chatml Llama converted by Tandem."""
    _require("engine.loader", "engine.convert")
    import assets

    embedded = assets.embedded_model_dir()
    if (embedded / "mlc-chat-config.json").is_file():
        return embedded
    from engine.convert import convert_hf_checkpoint

    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("serve-hf"))
    out_dir = tmp_path_factory.mktemp("serve-mlc") / "model"
    convert_hf_checkpoint(checkpoint, out_dir, "q0f32")
    return out_dir


@pytest.fixture(scope="session")
def served_engine(served_model_dir):
    from engine.loader import open_engine

    engine = open_engine(served_model_dir, backend="tvm")
    yield engine
    engine.close()
