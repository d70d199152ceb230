"""Fixtures for the history store's tests: a fresh database file per test and a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import ManualClock

from app.store import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history" / "tandem.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    opened = Store.open(db_path)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
