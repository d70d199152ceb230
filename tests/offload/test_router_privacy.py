"""The privacy gate and the context policy."""

from __future__ import annotations

import itertools

import pytest

from offload.privacy import (
    ConversationPolicy,
    HistoryEntry,
    PrivacySettings,
    cloud_share,
    may_leave,
)


@pytest.mark.parametrize(
    ("mode", "opt_in", "locked", "online"),
    list(itertools.product(("offline", "ask", "auto"), (False, True), (False, True), (False, True))),
)
def test_a_request_leaves_only_when_mode_opt_in_lock_and_network_all_allow(
    mode: str, opt_in: bool, locked: bool, online: bool
) -> None:
    verdict = may_leave(PrivacySettings(mode=mode), ConversationPolicy(opt_in, locked), online)
    assert verdict.allowed is (mode != "offline" and opt_in and not locked and online)
    assert verdict.needs_approval is (verdict.allowed and mode == "ask")
    assert verdict.reason


def test_defaults_keep_everything_local() -> None:
    assert PrivacySettings().mode == "ask" and PrivacySettings().redact
    assert not may_leave(PrivacySettings(), ConversationPolicy(), online=True).allowed


def conversation(exchanges: int, **marks: bool) -> list[HistoryEntry]:
    history = [HistoryEntry("system", "be brief", **marks)]
    for i in range(exchanges):
        history += [HistoryEntry("user", f"q{i}", **marks), HistoryEntry("assistant", f"a{i}", **marks)]
    return history


NOW = {"role": "user", "content": "now"}


def sent(history: list[HistoryEntry], policy: str, recent: int = 2) -> list[str]:
    return [m["content"] for m in cloud_share(history, NOW, policy, recent).messages]


@pytest.mark.parametrize("turns", [0, 1, 3, 10])
def test_recent_turns_sends_system_last_exchanges_and_the_new_message(turns: int) -> None:
    kept = min(turns, 5)
    earlier = [c for i in range(5 - kept, 5) for c in (f"q{i}", f"a{i}")]
    assert sent(conversation(5), "recent", turns) == ["be brief", *earlier, "now"]


def test_this_message_only_sends_the_message_alone() -> None:
    share = cloud_share(conversation(3), NOW, "message", 2)
    assert [m["content"] for m in share.messages] == ["now"]
    assert share.earlier_messages == 0


def test_whole_conversation_sends_everything_even_from_before_the_opt_in() -> None:
    history = conversation(2, before_opt_in=True) + [HistoryEntry("user", "q9"), HistoryEntry("assistant", "a9")]
    share = cloud_share(history, NOW, "whole", 1)
    assert [m["content"] for m in share.messages] == ["be brief", "q0", "a0", "q1", "a1", "q9", "a9", "now"]
    assert share.earlier_messages == 6 and share.held_before_opt_in == 0


def test_turns_from_before_the_opt_in_stay_home_unless_whole() -> None:
    history = conversation(2, before_opt_in=True) + [HistoryEntry("user", "q9"), HistoryEntry("assistant", "a9")]
    share = cloud_share(history, NOW, "recent", 2)
    assert [m["content"] for m in share.messages] == ["q9", "a9", "now"]
    assert share.held_before_opt_in == 3  # the system message and the exchange q1/a1


def test_refusals_and_the_questions_they_declined_never_leave() -> None:
    refusal = "I can't answer that here: it needs a bigger model."
    history = [
        HistoryEntry("user", "capital of Peru?"), HistoryEntry("assistant", refusal, refusal=True),
        HistoryEntry("user", "how do I search?"), HistoryEntry("assistant", "Press Ctrl+F."),
        HistoryEntry("user", "and of Chile?"), HistoryEntry("assistant", refusal, refusal=True),
    ]
    for policy in ("recent", "whole"):
        assert sent(history, policy, 5) == ["how do I search?", "Press Ctrl+F.", "now"]
