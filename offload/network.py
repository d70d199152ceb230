"""The one way out of the machine: every provider request opens its sockets through here.

Offline mode is enforced at connect time (nothing but loopback, refused before any socket or DNS
lookup), reachability is learned from connect failures and re-probed cheaply, and the UI observes
the state through `Network.subscribe`.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from offload.errors import OfflineError

if TYPE_CHECKING:
    import ssl

    import httpx

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback(host: str) -> bool:
    """True for literal loopback addresses and `localhost`: the only hosts offline mode allows."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name to resolve; resolving it would already be a request to the network
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@dataclass(frozen=True)
class NetworkState:
    """What the UI shows: the user's switch, and whether the cloud answered last time we tried."""

    forced_offline: bool = False
    reachable: bool = True
    detail: str = "online"

    @property
    def online(self) -> bool:
        return not self.forced_offline and self.reachable


class Wire:
    """One client's sockets: the bytes written and read through them, and a way to cut them all
    (from any thread) so that a blocked read ends at once, as cancelling a reply needs."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self._sockets: list[socket.socket] = []
        self._cut = False

    def cut(self) -> None:
        self._cut = True
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def _attach(self, sock: socket.socket | None) -> None:
        if sock is not None:
            self._sockets.append(sock)
            if self._cut:
                self.cut()


Listener = Callable[[NetworkState], None]


class Network:
    """The offline switch, the reachability detector and the factory of every outgoing client."""

    def __init__(
        self,
        *,
        offline: bool = False,
        probe_interval: float = 30.0,
        probe_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = NetworkState(forced_offline=offline, detail=_detail(offline, True, None))
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._clock = clock
        self._failed_target: tuple[str, int] | None = None
        self._last_probe = float("-inf")
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    @property
    def state(self) -> NetworkState:
        return self._state

    @property
    def online(self) -> bool:
        return self._state.online

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(state)` on every change (from whichever thread made it); returns an unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def set_offline(self, offline: bool) -> None:
        """The hard switch (settings, Ctrl+G, `--offline`)."""
        self._update(forced_offline=offline)

    def ensure_allowed(self, host: str) -> None:
        """Raise OfflineError unless a connection to `host` may be opened now."""
        if self._state.forced_offline and not is_loopback(host):
            raise OfflineError(host)

    def check(self) -> NetworkState:
        """The state, after a re-probe if the cloud was unreachable and the last probe is old enough."""
        with self._lock:
            due = (
                not self._state.reachable
                and not self._state.forced_offline
                and self._clock() - self._last_probe >= self._probe_interval
            )
        if due:
            self.probe()
        return self._state

    def probe(self) -> bool:
        """Try a bare TCP connect to the target that last failed; True when it now answers."""
        target = self._failed_target
        if target is None or self._state.forced_offline:
            return self._state.online
        with self._lock:
            self._last_probe = self._clock()
        try:
            with socket.create_connection(target, timeout=self._probe_timeout):
                pass
        except OSError:
            return False
        self._connected()
        return True

    def client(self, timeout: httpx.Timeout, wire: Wire | None = None) -> httpx.Client:
        """An httpx client whose every socket passes this network's guard and runs through `wire`."""
        import httpcore
        import httpx

        context = _ssl_context()
        transport = httpx.HTTPTransport(verify=context, trust_env=False)
        # httpx has no public hook for the socket layer; swapping its pool for one with our
        # network backend is the single place Tandem reaches inside it (httpx is pinned <0.29).
        transport._pool = httpcore.ConnectionPool(
            # _GuardedBackend implements httpcore.NetworkBackend's methods without subclassing it:
            # that would import httpcore with this module, which the TUI loads before its first paint.
            ssl_context=context, network_backend=_GuardedBackend(self, wire or Wire()),  # type: ignore[arg-type]
        )
        return httpx.Client(transport=transport, timeout=timeout, trust_env=False, follow_redirects=False)

    def _connected(self) -> None:
        self._update(reachable=True)

    def _connect_failed(self, host: str, port: int) -> None:
        with self._lock:
            self._failed_target = (host, port)
            self._last_probe = self._clock()
        self._update(reachable=False)

    def _update(self, *, forced_offline: bool | None = None, reachable: bool | None = None) -> None:
        with self._lock:
            old = self._state
            forced = old.forced_offline if forced_offline is None else forced_offline
            up = old.reachable if reachable is None else reachable
            if up:
                self._failed_target = None
            new = NetworkState(forced, up, _detail(forced, up, self._failed_target))
            if new == old:
                return
            self._state = new
            listeners = list(self._listeners)
        for listener in listeners:
            listener(new)


def _detail(forced_offline: bool, reachable: bool, failed_target: tuple[str, int] | None) -> str:
    if forced_offline:
        return "offline mode is on"
    if not reachable and failed_target is not None:
        return f"cannot reach {failed_target[0]}:{failed_target[1]}"
    return "online"


NETWORK = Network()
"""The process-wide instance: `--offline`, settings and the UI act on it; providers default to it."""


@cache
def _ssl_context() -> ssl.SSLContext:
    import httpx

    return httpx.create_ssl_context()


class _GuardedBackend:
    """httpcore's network backend with the offline guard, reachability reports and the wire."""

    def __init__(self, network: Network, wire: Wire) -> None:
        import httpcore

        self._network = network
        self._wire = wire
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> _WiredStream:
        import httpcore

        self._network.ensure_allowed(host)
        try:
            stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        except (httpcore.ConnectError, httpcore.ConnectTimeout):
            self._network._connect_failed(host, port)
            raise
        self._network._connected()
        self._wire._attach(stream.get_extra_info("socket"))
        return _WiredStream(stream, self._wire)

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise OfflineError(f"unix:{path}")  # providers speak TCP only; refuse anything else

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _WiredStream:
    def __init__(self, inner: Any, wire: Wire) -> None:
        self._inner = inner
        self._wire = wire

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._inner.read(max_bytes, timeout)
        self._wire.received += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)
        self._wire.sent += len(buffer)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> _WiredStream:
        return _WiredStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._wire)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
