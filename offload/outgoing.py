"""The one record of a request that leaves the machine: built once (by the router, through its
provider), shown in the ask-mode preview, sent byte for byte, and recorded in the egress ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.api import Message


@dataclass(frozen=True)
class OutgoingRequest:
    """Exactly what would leave, and where: `body` is the text sent (for a chat provider the HTTP
    body; for the hybrid verifier the prompt it scores). Everything else is derived from this."""

    provider: str
    host: str
    """host[:port], as the preview and the ledger show it."""
    body: str
    model: str = ""
    messages: Sequence[Message] = field(default=(), repr=False)
    """The messages the body carries, already redacted."""
    max_tokens: int = 0
    temperature: float = 0.0

    @property
    def payload(self) -> str:
        """The body under the name the preview and the ledger use."""
        return self.body


class CarriesRequest:
    """Where a record that carries an OutgoingRequest says its provider, host and payload: read
    from the request, never restated."""

    request: OutgoingRequest

    @property
    def provider(self) -> str:
        return self.request.provider

    @property
    def host(self) -> str:
        return self.request.host

    @property
    def payload(self) -> str:
        return self.request.body


@dataclass(frozen=True)
class Exchange(CarriesRequest):
    """What left the machine for one request, retries included: the request as sent and the bytes
    measured on the wire (headers included)."""

    request: OutgoingRequest
    bytes_sent: int
    bytes_received: int
