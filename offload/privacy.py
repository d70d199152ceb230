"""The user's privacy settings, and the one function that decides whether a request may leave."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["offline", "ask", "auto"]


@dataclass(frozen=True)
class PrivacySettings:
    mode: Mode = "ask"
    redact: bool = True
    context_turns: int = 4
    """How many earlier turns travel with a cloud request."""
    terms: tuple[str, ...] = field(default_factory=tuple)
    """User-defined strings that are always redacted."""


@dataclass(frozen=True)
class ConversationPolicy:
    cloud_opt_in: bool = False
    local_only: bool = False


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


def may_leave(settings: PrivacySettings, policy: ConversationPolicy, online: bool) -> Verdict:
    """Every cloud send passes through here first."""
    if settings.mode == "offline":
        return Verdict(False, "offline mode is on")
    if not online:
        return Verdict(False, "no network: the cloud is unreachable")
    if policy.local_only:
        return Verdict(False, "this conversation is locked to local")
    if not policy.cloud_opt_in:
        return Verdict(False, "this conversation has not opted in to the cloud")
    return Verdict(True, "allowed by settings and conversation opt-in")
