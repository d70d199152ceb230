"""The cloud provider a router may escalate to, opened on first use: most turns stay local, and
opening one imports the HTTP stack and reads the keyring (together about a second of start-up)."""

from __future__ import annotations

import threading
from typing import Any

DEFAULT_NAMES = {"anthropic": "anthropic", "openai-compatible": "openai"}
"""The keyring entry open_provider uses when the settings name none."""


class DeferredProvider:
    """offload.providers.open_provider(kind, name, base_url, network=network, timeouts=timeouts),
    called the first time the router needs more than the provider's name; its key is read then."""

    def __init__(
        self, kind: str, name: str | None, base_url: str | None, network: Any, timeouts: Any = None
    ) -> None:
        self.kind, self.base_url, self.network, self.timeouts = kind, base_url, network, timeouts
        self.name = name or DEFAULT_NAMES.get(kind, "openai")
        self._provider: Any = None
        self._lock = threading.Lock()

    @property
    def opened(self) -> bool:
        return self._provider is not None

    def provider(self) -> Any:
        with self._lock:
            if self._provider is None:
                from offload.providers import open_provider

                self._provider = open_provider(
                    self.kind, self.name, self.base_url, network=self.network, timeouts=self.timeouts
                )
            return self._provider

    @property
    def host(self) -> str:
        return self.provider().host

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self.provider().request(*args, **kwargs)

    def send(self, *args: Any, **kwargs: Any) -> Any:
        return self.provider().send(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        # Anything else a provider offers (only reached for names not set above).
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.provider(), attribute)
