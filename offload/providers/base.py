"""What every cloud provider offers the router: one streaming chat call, and the records it yields."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.api import Message, Usage
from offload.outgoing import Exchange, OutgoingRequest

__all__ = ["Exchange", "OutgoingRequest", "Provider", "ProviderEvent", "RetryPolicy", "StreamEnd", "TextDelta", "Timeouts"]


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection, and for each read once connected (a slow model's gaps)."""

    connect: float = 5.0
    read: float = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, for 429, 5xx and connect failures before any token."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0
    """A Retry-After longer than this is not waited out: the error goes to the caller at once."""


@dataclass(frozen=True)
class TextDelta:
    """A piece of the reply, yielded once and never repeated."""

    text: str


@dataclass(frozen=True)
class StreamEnd:
    """The last event of every call that did not raise."""

    finish_reason: str
    """"stop", "length", "cancelled", or what the provider said."""
    usage: Usage | None
    """None when the server sent no usage figures (or the call was cancelled before them)."""
    model: str
    exchange: Exchange


ProviderEvent = TextDelta | StreamEnd


class Provider(Protocol):
    name: str
    """The provider's name, also its keyring entry: "openai", "anthropic", "vllm", ..."""

    @property
    def host(self) -> str:
        """host[:port] the requests go to, as shown in previews and the egress ledger."""
        ...

    def request(
        self, messages: Sequence[Message], model: str, max_tokens: int, temperature: float
    ) -> OutgoingRequest:
        """The request these arguments make, its body built once: the preview shows it, `send` sends it."""
        ...

    def send(self, request: OutgoingRequest, cancel: threading.Event | None = None) -> Iterator[ProviderEvent]:
        """Send `request.body` as it is; yield TextDeltas then one StreamEnd; raise a ProviderError
        (with `.exchange`) on failure."""
        ...
