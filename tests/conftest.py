"""Test-wide guards: every test gets its own TANDEM_HOME and keyring file, and no test may
open a connection to anything but loopback."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Compiled models are cached across tests and runs; compiling is the slowest thing tests do.
os.environ.setdefault("TANDEM_CACHE_DIR", str(REPO_ROOT / ".cache" / "tandem-test"))
# torch and TVM thread pools fight in one process; passive waiting keeps both usable.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
    else:
        return True  # AF_UNIX paths and the like never leave the machine
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname to be resolved: refuse, tests only dial literal loopback


class NetworkEscape(AssertionError):
    pass


def _deny_remote_connects(event: str, args: tuple) -> None:
    if event == "socket.connect" and not _is_loopback(args[1]):
        raise NetworkEscape(f"test tried to connect to {args[1]!r}; tests reach only 127.0.0.1")


sys.addaudithook(_deny_remote_connects)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("tandem-home")
    monkeypatch.setenv("TANDEM_HOME", str(home))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    return home

