"""Issue 13, a newcomer's first hour: the offload faults it found, each pinned by the item it names."""

from __future__ import annotations

import pytest

from offload.redaction import Redactor


def test_an_ip_address_ending_a_sentence_is_redacted() -> None:
    """Item 3: the IPv4 lookahead refused a trailing full stop, so the address left as it was."""
    out = Redactor().redact("Contact: 11.159.244.37. Summarise the outage.")
    assert out == "Contact: [IP_1]. Summarise the outage."


@pytest.mark.parametrize("address", ["77.140.35.237", "82.165.177.154", "11.159.244.37", "203.0.113.9"])
def test_ip_addresses_are_labelled_ip_not_phone(address: str) -> None:
    """Item 3: dotted quads that libphonenumber also reads as numbers were labelled [PHONE_n]."""
    assert Redactor().redact(f"host {address} is down") == "host [IP_1] is down"


@pytest.mark.parametrize("iban", ["GB82WEST12345698765432", "GB33BUKB20201555555555", "GB82 WEST 1234 5698 7654 32"])
def test_gb_ibans_are_labelled_iban_not_secret(iban: str) -> None:
    """Item 3: a compact GB IBAN also looks like a random token and was labelled [SECRET_n]."""
    assert Redactor().redact(f"pay {iban} today") == "pay [IBAN_1] today"


@pytest.mark.parametrize(
    "text",
    ["Invoice INV-2026-000123 is overdue", "order 2026-000123 shipped", "Order no. 2026-000123 shipped",
     "ticket #2026-000123 closed"],
)
def test_invoice_and_order_numbers_are_not_phone_numbers(text: str) -> None:
    """Item 3: `Invoice INV-2026-000123` was redacted as a phone number."""
    assert "PHONE" not in Redactor().redact(text)


def test_phone_numbers_are_still_found_beside_the_rule() -> None:
    """Item 3's reference-number rule must not hide real phone numbers."""
    out = Redactor().redact("Call 202-555-0143 or +44 20 7946 0958.")
    assert out == "Call [PHONE_1] or [PHONE_2]."


def _tandem(*args: str, stdin: str = ""):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", "app", *args], input=stdin, capture_output=True, text=True, cwd=root, timeout=60
    )


def test_keys_set_names_a_plaintext_backend_and_the_safer_ways(isolated_home) -> None:
    """Item 4: with keyrings.alt's plaintext file as the backend, `tandem keys set` said "the system
    keyring". It must name the file, say it is not encrypted, and point to the variable."""
    from offload import keys

    done = _tandem("keys", "set", "openai", stdin="sk-test-0123456789abcdefghij\n")
    assert done.returncode == 0, done.stderr
    assert "system keyring" not in done.stdout
    backend = keys.backend()
    assert backend.plaintext and backend.location
    assert "plaintext" in done.stdout and backend.location in done.stdout
    assert "not encrypted" in done.stderr and "OPENAI_API_KEY" in done.stderr
    assert "sk-test-0123456789abcdefghij" not in done.stdout + done.stderr


def _chunk(delta: dict) -> str:
    import json

    return f"data: {json.dumps({'model': 'm', 'choices': [{'index': 0, 'delta': delta}]})}\n\n"


EMPTY_STREAMS = {
    "only [DONE]": ["data: [DONE]\n\n"],
    "content not a string": [_chunk({"content": 42}), _chunk({"content": None}), "data: [DONE]\n\n"],
    "content a list": [_chunk({"content": ["x"]}), "data: [DONE]\n\n"],
    "no text at all": [_chunk({"role": "assistant", "content": ""}), "data: [DONE]\n\n"],
}


@pytest.mark.parametrize("events", EMPTY_STREAMS.values(), ids=EMPTY_STREAMS.keys())
def test_a_cloud_stream_with_no_text_is_a_failed_turn_that_falls_back_local(server, events) -> None:
    """Item 7: a stream of only [DONE], or whose delta.content is not a string, was stored as a
    complete cloud answer with an empty reply. It is a failed cloud turn: local answer, notice."""
    from conftest_router import REFUSAL, ScriptedEngine, confident
    from offload_faults import make_provider, stream

    from offload.events import Discard, Notice, Token, TurnDone
    from offload.privacy import ConversationPolicy, PrivacySettings
    from offload.router import Router, Turn

    server.play(stream(events))
    router = Router(ScriptedEngine(lambda text: confident(REFUSAL)), PrivacySettings(mode="auto"),
                    provider=make_provider("openai", server.base), cloud_model="m")
    turn = Turn(1, [{"role": "user", "content": "hello"}], ConversationPolicy(cloud_opt_in=True))
    out = list(router.run(turn))
    done = out[-1]
    assert isinstance(done, TurnDone) and done.route == "local" and "cloud failed" in done.reason
    assert any("The cloud failed" in e.text and "cannot read" in e.text for e in out if isinstance(e, Notice))
    shown = ""
    for event in out:  # what the user ends up seeing: a Discard withdraws what came before
        shown = "" if isinstance(event, Discard) else shown + (event.text if isinstance(event, Token) else "")
    assert shown == REFUSAL


def test_a_local_turn_the_user_forced_does_not_blame_the_cloud_opt_in() -> None:
    """Item 14: `--local` turns still explained "…but this conversation has not opted in to the
    cloud"; the user asked for local, so the reason says that."""
    from conftest_router import ScriptedEngine, unsure

    from offload.events import TurnDone
    from offload.privacy import ConversationPolicy, PrivacySettings
    from offload.router import Router, Turn

    router = Router(ScriptedEngine(lambda text: unsure("Maybe, maybe not, who can say really.")),
                    PrivacySettings(mode="ask"))
    done = list(router.run(Turn(1, [{"role": "user", "content": "hm?"}], ConversationPolicy(), force="local")))[-1]
    assert isinstance(done, TurnDone) and done.route == "local"
    assert done.reason.startswith("forced local") and "opted in" not in done.reason and "cloud" not in done.reason


def test_a_cloud_reply_is_not_labelled_with_the_local_confidence() -> None:
    """Item 14: cloud replies showed "confidence 1.00" (the local draft's score, cut short)."""
    from app.route_labels import describe_reply

    cloud = describe_reply(route="cloud", provider="openai", model="gpt-4o-mini", confidence=1.0, tok_s=None,
                           reason="escalated: the local model began to refuse")
    local = describe_reply(route="local", provider="tvm", model="tandem-nano", confidence=0.91, tok_s=None,
                           reason="the local model is confident")
    assert "confidence" not in cloud and "confidence 0.91" in local


def test_a_rejected_key_names_advice_that_works_without_a_keyring() -> None:
    """Item 15: the 401 message recommended only `tandem keys` commands, which fail on a machine
    without a keyring; it names the provider's environment variable too."""
    from offload.errors import AuthError, MissingKey

    assert "MY_VLLM_API_KEY" in str(AuthError("my-vllm", 401))
    assert "ONPREM_API_KEY" in str(MissingKey("onprem", "ONPREM_API_KEY"))
