"""Fixtures for the app's tests: a real history store in the per-test TANDEM_HOME, a TandemApp
wired to it, and a cloud on 127.0.0.1 (helpers live in app_helpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from app_helpers import LoopbackCloud, ScriptedRouter, ready_opener

from app.store import Store
from app.tui.app import TandemApp


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on anyio's pytest plugin (installed with httpx), on asyncio as Textual needs."""
    return "asyncio"


@pytest.fixture
def db_path(isolated_home: Path) -> Path:
    return isolated_home / "tandem.db"


@pytest.fixture
def store(db_path: Path):
    with Store.open(db_path) as opened:
        yield opened


@pytest.fixture(autouse=True)
def network_back_online():
    """offload.network.NETWORK is process-wide; leave it online for the next test."""
    yield
    from offload.network import NETWORK

    NETWORK.set_offline(False)


@pytest.fixture
def loopback_cloud():
    cloud = LoopbackCloud("I will write to [EMAIL_1] today.")
    yield cloud
    cloud.close()


@pytest.fixture
def make_app(db_path: Path):
    """A TandemApp on the test's database, opened up front so tests can act at once; by default it
    loads no model (flows that need none)."""

    def build(router: ScriptedRouter | None = None, **kwargs: Any) -> TandemApp:
        if "store" not in kwargs:
            kwargs["store"] = Store.open(db_path)
        if router is not None:
            kwargs.setdefault("make_router", router.factory())
            kwargs.setdefault("open_engine", ready_opener)
        else:
            kwargs.setdefault("load_engine", False)
        return TandemApp(db_path, **kwargs)

    return build
