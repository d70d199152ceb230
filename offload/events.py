"""What the router yields for a turn; the app renders and persists these, nothing else does.

Data flows one way: the app hands the router a Turn, the router yields these events back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from offload.outgoing import Exchange, OutgoingRequest

Route = Literal["local", "cloud", "hybrid"]
"""hybrid: the local model drafted and a verifier checked the drafts (speculative decoding)."""


@dataclass(frozen=True)
class Token:
    """A piece of the reply as it streams, from the local model or a cloud provider."""

    text: str
    route: Route
    logprob: float | None = None


@dataclass(frozen=True)
class Decision:
    """Why the turn went where it went; features are the raw inputs to the score."""

    route: Route
    reason: str
    confidence: float | None = None
    features: Mapping[str, float] = field(default_factory=dict)
    provider: str | None = None
    """For the cloud: the provider the turn goes to (the store records it before any token)."""
    model: str | None = None
    draft_complete: bool = False
    """The features describe a local draft generated in full (not stopped early)."""


@dataclass(frozen=True)
class Discard:
    """The streamed draft so far is withdrawn (the local draft is being replaced by the cloud's)."""

    reason: str


@dataclass(frozen=True)
class Egress:
    """One request that left the machine: the request exactly as it was sent (after redaction) and
    the bytes the wire measured; the ledger records these fields and nothing restated."""

    exchange: Exchange
    redactions: Mapping[str, int] = field(default_factory=dict)
    """Placeholder kind -> count, never the original values."""
    context_policy: str | None = None
    """The cloud-context policy the request was built under ("message", "recent", "whole")."""
    context_messages: int = 0
    """Earlier messages of the conversation the request carried (besides the new one)."""

    @property
    def request(self) -> OutgoingRequest:
        return self.exchange.request

    @property
    def provider(self) -> str:
        return self.exchange.request.provider

    @property
    def host(self) -> str:
        return self.exchange.request.host

    @property
    def payload(self) -> str:
        return self.exchange.request.body

    @property
    def bytes_sent(self) -> int:
        return self.exchange.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.exchange.bytes_received


@dataclass(frozen=True)
class Notice:
    """Something the user should see beside the reply (the cloud failed, kept local, ...)."""

    text: str


@dataclass(frozen=True)
class TurnDone:
    """The end of a turn, with what the store records on the assistant message."""

    route: Route
    model: str
    provider: str
    status: Literal["complete", "interrupted", "error"]
    reason: str
    confidence: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    ttft_ms: float | None = None
    tok_s: float | None = None
    refusal: bool = False
    """The local model declined the turn and it stayed local: never sent to the cloud later."""
    acceptance: float | None = None
    """Hybrid turns: the share of drafted tokens the verifier accepted."""
    passes_saved: int | None = None
    """Hybrid turns: verifier passes saved against the verifier generating every token."""


RouterEvent = Token | Decision | Discard | Egress | Notice | TurnDone
