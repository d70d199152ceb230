"""The privacy gate and the context policy."""

from __future__ import annotations

import itertools

import pytest

from offload.privacy import ConversationPolicy, PrivacySettings, cloud_context, may_leave


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


def conversation(exchanges: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "be brief"}]
    for i in range(exchanges):
        messages += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    return messages + [{"role": "user", "content": "now"}]


@pytest.mark.parametrize("turns", [0, 1, 3, 10])
def test_context_policy_sends_system_last_turns_and_the_new_message(turns: int) -> None:
    sent = [m["content"] for m in cloud_context(conversation(5), turns)]
    kept = min(turns, 5)
    earlier = [c for i in range(5 - kept, 5) for c in (f"q{i}", f"a{i}")]
    assert sent == ["be brief", *earlier, "now"]
