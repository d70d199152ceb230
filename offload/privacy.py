"""The user's privacy settings, the one function that decides whether a request may leave, and
the context policy: how much of a conversation travels with a cloud request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    needs_approval: bool = False
    """Ask mode: the user sees the exact payload and its destination, and may say no."""


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
    if settings.mode == "ask":
        return Verdict(True, "allowed once you approve it", needs_approval=True)
    return Verdict(True, "allowed by settings and conversation opt-in")


def cloud_context(
    messages: Sequence[Mapping[str, str]], context_turns: int
) -> list[dict[str, str]]:
    """The system messages, the last `context_turns` earlier exchanges, and the new message:
    only what the cloud needs to answer, not the whole conversation."""
    if not messages:
        return []
    *earlier, current = messages
    system = [dict(m) for m in earlier if m["role"] == "system"]
    dialogue = [m for m in earlier if m["role"] != "system"]
    kept: list[dict[str, str]] = []
    users_seen = 0
    for message in reversed(dialogue):
        if users_seen >= context_turns:
            break
        kept.append(dict(message))
        if message["role"] == "user":
            users_seen += 1
    if kept and kept[-1]["role"] != "user":
        kept.pop()  # never start the excerpt with a reply whose question was cut off
    return [*system, *reversed(kept), dict(current)]
