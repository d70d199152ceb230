"""Helpers shared by the store's tests: a clock moved by hand, the CLI as a user runs it, and the
child process (store_child.py) that writes into a store from outside the test."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("store_child.py")


class ManualClock:
    """A monotonic clock that moves only when told, counted in whole milliseconds."""

    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, ms: int) -> None:
        self.ms += ms


def run_cli(db: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--db", str(db), "history", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )


def spawn_child(*args: str) -> subprocess.Popen[str]:
    """store_child.py with this checkout's app importable; see that file for the modes."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def raw_rows(db: Path, sql: str, *params: object) -> list[tuple]:
    """Read with a plain sqlite3 connection of its own, as another process would see the file."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
