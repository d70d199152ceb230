"""The suite's own guard: a connect beyond loopback fails before any packet is sent."""

import socket

import pytest


def test_guard_refuses_remote_connect():
    with socket.socket() as sock, pytest.raises(AssertionError, match="tests reach only 127.0.0.1"):
        sock.connect(("192.0.2.1", 80))


def test_guard_allows_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
