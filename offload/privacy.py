"""The user's privacy settings, the one function that decides whether a request may leave, and
the context policy: how much of a conversation travels with a cloud request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["offline", "ask", "auto"]
MODES: tuple[Mode, ...] = ("offline", "ask", "auto")
"""The privacy modes in the order Ctrl+G cycles them, most private first."""

ContextPolicy = Literal["message", "recent", "whole"]
"""How much of a conversation travels with a cloud request: this message only, the last few
exchanges, or the whole conversation."""
CONTEXT_POLICIES: tuple[ContextPolicy, ...] = ("message", "recent", "whole")
DEFAULT_CONTEXT_POLICY: ContextPolicy = "recent"
DEFAULT_RECENT_EXCHANGES = 2
"""Small on purpose: most follow-up questions lean on the last exchange or two."""


@dataclass(frozen=True)
class PrivacySettings:
    mode: Mode = "ask"
    redact: bool = True
    context_turns: int = DEFAULT_RECENT_EXCHANGES
    """How many earlier exchanges travel with a cloud request under the "recent" policy."""
    context_policy: ContextPolicy = DEFAULT_CONTEXT_POLICY
    """The default for conversations that have not chosen their own."""
    terms: tuple[str, ...] = field(default_factory=tuple)
    """User-defined strings that are always redacted."""


@dataclass(frozen=True)
class ConversationPolicy:
    cloud_opt_in: bool = False
    local_only: bool = False
    context: ContextPolicy | None = None
    """This conversation's cloud-context policy; None follows the settings' default."""


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


def describe_context(policy: ContextPolicy, recent_exchanges: int, short: bool = False) -> str:
    """The policy in words, for the route label and the preview (short: for the header)."""
    if policy == "message":
        return "this message" if short else "this message only"
    if policy == "whole":
        return "everything" if short else "whole conversation"
    if short:
        return f"last {recent_exchanges}"
    return f"last {recent_exchanges} exchange{'s' if recent_exchanges != 1 else ''}"


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier message as the cloud-context policy sees it."""

    role: str
    content: str
    refusal: bool = False
    """A local reply that declined to answer ("this needs a bigger model"): never sent."""
    before_opt_in: bool = False
    """Written before the conversation opted in to the cloud: sent only with "whole"."""


@dataclass(frozen=True)
class CloudShare:
    """What one cloud request carries, and what the policy left at home."""

    messages: list[dict[str, str]]
    policy: ContextPolicy
    earlier_messages: int
    """Earlier messages (not counting system messages and the new one) in `messages`."""
    held_before_opt_in: int = 0
    """Earlier messages the policy would have sent but that predate the opt-in."""

    @property
    def alone(self) -> list[dict[str, str]]:
        """The new message by itself: what "send it alone" in the preview sends."""
        return [self.messages[-1]] if self.messages else []


def cloud_share(
    history: Sequence[HistoryEntry], current: Mapping[str, str], policy: ContextPolicy, recent_exchanges: int
) -> CloudShare:
    """The messages a cloud request carries under `policy`: never a local refusal (nor the
    question it declined); with "recent", the system messages and the last `recent_exchanges`
    exchanges; and of those, what predates the opt-in only when the policy is "whole"."""
    now = {"role": current["role"], "content": current["content"]}
    if policy == "message":
        return CloudShare([now], policy, 0)
    answered = _without_refused_exchanges(history)
    dialogue = [e for e in answered if e.role != "system"]
    if policy == "recent":
        dialogue = _last_exchanges(dialogue, recent_exchanges)
    wanted = [*(e for e in answered if e.role == "system"), *dialogue]
    sent = [e for e in wanted if policy == "whole" or not e.before_opt_in]
    earlier = sum(1 for e in sent if e.role != "system")
    return CloudShare([*(_plain(e) for e in sent), now], policy, earlier, len(wanted) - len(sent))


def _without_refused_exchanges(history: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    kept: list[HistoryEntry] = []
    for entry in history:
        if entry.refusal:
            if kept and kept[-1].role == "user":
                kept.pop()  # the question the local model declined goes with its refusal
            continue
        kept.append(entry)
    return kept


def _last_exchanges(dialogue: Sequence[HistoryEntry], exchanges: int) -> list[HistoryEntry]:
    kept: list[HistoryEntry] = []
    users_seen = 0
    for entry in reversed(dialogue):
        if users_seen >= exchanges:
            break
        kept.append(entry)
        if entry.role == "user":
            users_seen += 1
    if kept and kept[-1].role != "user":
        kept.pop()  # never start the excerpt with a reply whose question was cut off
    return list(reversed(kept))


def _plain(entry: HistoryEntry) -> dict[str, str]:
    return {"role": entry.role, "content": entry.content}
