"""The cloud provider a router may escalate to, opened on first use: most turns stay local, and
opening one imports the HTTP stack and reads the keyring (together about a second of start-up)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the HTTP stack loads when the provider first opens
    from engine.api import Message
    from offload.network import Network
    from offload.outgoing import OutgoingRequest
    from offload.providers import Kind, Provider, ProviderEvent, Timeouts

DEFAULT_NAMES = {"anthropic": "anthropic", "openai-compatible": "openai"}
"""The keyring entry open_provider uses when the settings name none."""


class DeferredProvider:
    """offload.providers.open_provider(kind, name, base_url, network=network, timeouts=timeouts),
    called the first time the router needs more than the provider's name; its key is read then."""

    def __init__(
        self, kind: Kind, name: str | None, base_url: str | None, network: Network, timeouts: Timeouts | None = None
    ) -> None:
        self.kind, self.base_url, self.network, self.timeouts = kind, base_url, network, timeouts
        self.name = name or DEFAULT_NAMES.get(kind, "openai")
        self._provider: Provider | None = None
        self._lock = threading.Lock()

    @property
    def opened(self) -> bool:
        return self._provider is not None

    def provider(self) -> Provider:
        with self._lock:
            if self._provider is None:
                from offload.providers import Timeouts, open_provider

                self._provider = open_provider(
                    self.kind, self.name, self.base_url, network=self.network, timeouts=self.timeouts or Timeouts()
                )
            return self._provider

    @property
    def host(self) -> str:
        return self.provider().host

    def request(self, messages: Sequence[Message], model: str, max_tokens: int, temperature: float) -> OutgoingRequest:
        return self.provider().request(messages, model, max_tokens, temperature)

    def send(self, request: OutgoingRequest, cancel: threading.Event | None = None) -> Iterator[ProviderEvent]:
        return self.provider().send(request, cancel)

    def __getattr__(self, attribute: str) -> Any:
        # Anything else a provider offers (only reached for names not set above).
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.provider(), attribute)
