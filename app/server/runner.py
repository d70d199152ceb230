"""The server process: binds the socket, runs the routes on uvicorn, and owns the scheduler that
feeds the engine; `serve_forever` / `shutdown` / `server_close` as http.server has them."""

from __future__ import annotations

import socket
import threading

import uvicorn

from app.server.metrics import ServerMetrics
from app.server.routes import ServerState, build_app
from engine.api import Engine
from engine.batching import DEFAULT_MAX_SEQUENCES, DEFAULT_MAX_WAITING, scheduler_for
from engine.tvm_backend.scoring import scorer_for

LISTEN_BACKLOG = 2048
"""Connections the kernel holds before they are accepted: a burst is queued, never dropped
(http.server's backlog of 5 dropped them); admission control answers 429 once accepted."""
GRACEFUL_SHUTDOWN_S = 5
"""How long a stop waits for streams in flight before closing them."""


class EngineServer:
    """One engine behind the OpenAI-compatible API, on a socket bound at construction."""

    def __init__(
        self,
        engine: Engine,
        host: str,
        port: int,
        token: str | None,
        max_sequences: int = DEFAULT_MAX_SEQUENCES,
        max_waiting: int = DEFAULT_MAX_WAITING,
    ) -> None:
        self.engine = engine
        self.socket = _bind(host, port)
        try:
            self.scheduler = scheduler_for(engine, max_sequences=max_sequences, max_waiting=max_waiting)
        except BaseException:
            self.socket.close()
            raise
        self.metrics = ServerMetrics(self.scheduler)
        app = build_app(ServerState(engine, self.scheduler, self.metrics, token, scorer_for(engine)))
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            backlog=LISTEN_BACKLOG,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        self._server = uvicorn.Server(config)
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"

    def serve_forever(self, poll_interval: float | None = None) -> None:
        """Answer requests until shutdown() (or, on the main thread, Ctrl+C: uvicorn stops
        gracefully and raises KeyboardInterrupt again). poll_interval is accepted for
        http.server's signature; uvicorn needs none."""
        self._stopped.clear()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 30) -> None:
        """Stop serve_forever() (from another thread) and wait for it to return."""
        self._server.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        """Release the socket and stop the scheduler; the engine stays open (its owner closes it)."""
        self.scheduler.close()
        self.socket.close()


def make_server(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_sequences: int = DEFAULT_MAX_SEQUENCES,
    max_waiting: int = DEFAULT_MAX_WAITING,
) -> EngineServer:
    """Bind (loopback unless told otherwise); call `serve_forever()` to answer requests.
    Raises OSError when the address cannot be bound, EngineError when the engine cannot batch."""
    return EngineServer(engine, host, port, token, max_sequences, max_waiting)


def _bind(host: str, port: int) -> socket.socket:
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
