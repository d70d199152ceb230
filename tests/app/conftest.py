"""Fixtures for the app's tests: a real history store in the per-test TANDEM_HOME, a TandemApp
wired to it, the real engine on the embedded model (opened once per session), and a real cloud on
127.0.0.1 that the settings point at (helpers live in app_helpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from app_helpers import HeldAfterFirstToken, KeptOpen, LoopbackCloud

from app.local_models import embedded_model, open_model
from app.settings import ProviderSettings, UserSettings, save_settings
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


@pytest.fixture(scope="session")
def nano_engine():
    """The real engine on the embedded tandem-nano, compiled (or loaded from the cache) once."""
    engine = open_model(embedded_model())
    yield engine
    engine.close()


@pytest.fixture
def loopback_cloud():
    cloud = LoopbackCloud("I will write to [EMAIL_1] today.")
    yield cloud
    cloud.close()


@pytest.fixture
def cloud_settings(store, loopback_cloud) -> UserSettings:
    """Settings (saved in the store, as the app reads them) whose cloud provider is the loopback one."""
    settings = UserSettings(
        providers=(ProviderSettings("loopback", "openai-compatible", loopback_cloud.base_url, "loopback-model"),),
        provider="loopback",
    )
    save_settings(store, settings)
    return settings


@pytest.fixture
def make_app(db_path: Path):
    """A TandemApp on the test's database, opened up front so tests can act at once; by default it
    loads no model (flows that need none)."""

    def build(**kwargs: Any) -> TandemApp:
        if "store" not in kwargs:
            kwargs["store"] = Store.open(db_path)
        kwargs.setdefault("load_engine", False)
        return TandemApp(db_path, **kwargs)

    return build


@pytest.fixture
def nano_app(make_app, nano_engine):
    """A TandemApp on the real engine and the real router; `held=True` holds the reply after its
    first token until it is cancelled."""

    def build(held: bool = False, **kwargs: Any) -> TandemApp:
        lent = HeldAfterFirstToken(nano_engine) if held else KeptOpen(nano_engine)
        return make_app(open_engine=lambda model, progress: lent, load_engine=True, **kwargs)

    return build
