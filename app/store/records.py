"""The history store's records: plain frozen dataclasses built from rows, and the row helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from offload.privacy import CONTEXT_POLICIES, ContextPolicy

Role = Literal["system", "user", "assistant", "tool"]
Status = Literal["complete", "partial", "interrupted", "error"]
Route = Literal["local", "cloud", "hybrid"]

ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
STATUSES: tuple[str, ...] = ("complete", "partial", "interrupted", "error")
ROUTES: tuple[str, ...] = ("local", "cloud", "hybrid")


def now() -> datetime:
    return datetime.now(timezone.utc)


def to_text(moment: datetime) -> str:
    """Times are stored as UTC ISO-8601 text, which sorts in time order."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created: datetime
    updated: datetime
    cloud_opt_in: bool = False
    local_only: bool = False
    ephemeral: bool = False
    """Don't keep: deleted when the process that made it closes the store (or, if it died, at the next open)."""
    archived: bool = False
    model: str | None = None
    """The local model this conversation prefers, None for the default."""
    cloud_context: ContextPolicy | None = None
    """How much of it travels with a cloud request ("message", "recent", "whole"); None: the default."""
    cloud_opt_in_at: datetime | None = None
    """When it last opted in to the cloud; what was written before leaves only with "whole"."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Conversation:
        return cls(
            id=row["id"],
            title=row["title"],
            created=from_text(row["created"]),
            updated=from_text(row["updated"]),
            cloud_opt_in=bool(row["cloud_opt_in"]),
            local_only=bool(row["local_only"]),
            ephemeral=bool(row["ephemeral"]),
            archived=bool(row["archived"]),
            model=row["model"],
            cloud_context=_context_policy(row["cloud_context"]),
            cloud_opt_in_at=from_text(row["cloud_opt_in_at"]) if row["cloud_opt_in_at"] else None,
        )


def _context_policy(stored: object) -> ContextPolicy | None:
    """A stored cloud-context policy; a value Tandem does not know (hand-edited) reads as the default."""
    return next((policy for policy in CONTEXT_POLICIES if policy == stored), None)


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: Role
    content: str
    created: datetime
    status: Status = "complete"
    route: Route | None = None
    model: str | None = None
    provider: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    ttft_ms: float | None = None
    tok_s: float | None = None
    confidence: float | None = None
    escalation_reason: str | None = None
    parent_id: int | None = None
    """The message this one answers; two replies sharing a parent are a regeneration."""
    refusal: bool = False
    """A local reply that declined the turn ("it needs a bigger model"): never sent to the cloud."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Message:
        return cls(
            id=row["id"],
            conversation_id=row["conversation_id"],
            role=row["role"],
            content=row["content"],
            created=from_text(row["created"]),
            status=row["status"],
            route=row["route"],
            model=row["model"],
            provider=row["provider"],
            tokens_in=row["tokens_in"],
            tokens_out=row["tokens_out"],
            ttft_ms=row["ttft_ms"],
            tok_s=row["tok_s"],
            confidence=row["confidence"],
            escalation_reason=row["escalation_reason"],
            parent_id=row["parent_id"],
            refusal=bool(row["refusal"]),
        )


MESSAGE_METADATA: tuple[str, ...] = (
    "route",
    "model",
    "provider",
    "tokens_in",
    "tokens_out",
    "ttft_ms",
    "tok_s",
    "confidence",
    "escalation_reason",
    "refusal",
)
"""The optional facts a message carries beside role, content, status and parent."""


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    message_id: int
    title: str
    role: Role
    snippet: str
    """The matching passage, matched terms between search.MARK_OPEN and search.MARK_CLOSE."""
    rank: float
    """bm25 score: lower is a better match; hits come best first."""


@dataclass(frozen=True)
class EgressRecord:
    """One request that left the machine, as the ledger keeps it."""

    id: int
    time: datetime
    conversation_id: int | None
    """None for requests outside a conversation, or once their conversation was deleted."""
    provider: str
    host: str
    payload: str | None
    """The exact redacted payload, or None where only its hash and size were kept."""
    payload_sha256: str
    payload_bytes: int
    bytes_sent: int
    bytes_received: int
    redactions: Mapping[str, int] = field(default_factory=dict)
    context_policy: str | None = None
    """The cloud-context policy the request was built under; None for rows from before it existed."""
    context_messages: int | None = None
    """Earlier messages of the conversation it carried besides the new one."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EgressRecord:
        return cls(
            id=row["id"],
            time=from_text(row["time"]),
            conversation_id=row["conversation_id"],
            provider=row["provider"],
            host=row["host"],
            payload=row["payload"],
            payload_sha256=row["payload_sha256"],
            payload_bytes=row["payload_bytes"],
            bytes_sent=row["bytes_sent"],
            bytes_received=row["bytes_received"],
            redactions=json.loads(row["redactions"]),
            context_policy=row["context_policy"],
            context_messages=row["context_messages"],
        )
