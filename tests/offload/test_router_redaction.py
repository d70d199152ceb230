"""Redaction: each detector, checksums that keep look-alikes out, stable placeholders, and
restoration of a streamed reply however it is split."""

from __future__ import annotations

import subprocess
import sys

import pytest

from offload.redaction import Redactor


def redacted(text: str, terms: tuple[str, ...] = ()) -> str:
    return Redactor(terms).redact(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+news@mail.example.co.uk today", "write to [EMAIL_1] today"),
        ("call +44 20 7946 0958 now", "call [PHONE_1] now"),
        ("call +33 1 42 68 53 00 now", "call [PHONE_1] now"),
        ("call (415) 555-2671 now", "call [PHONE_1] now"),
        ("card 4111 1111 1111 1111 ok", "card [CARD_1] ok"),
        ("card 5500-0000-0000-0004 ok", "card [CARD_1] ok"),
        ("card 378282246310005 ok", "card [CARD_1] ok"),
        ("iban GB82 WEST 1234 5698 7654 32 ok", "iban [IBAN_1] ok"),
        ("iban DE89370400440532013000 ok", "iban [IBAN_1] ok"),
        ("ssn 536-22-8901 ok", "ssn [SSN_1] ok"),
        ("dni 12345678Z ok", "dni [ID_1] ok"),
        ("aadhaar 2341 2341 2346 ok", "aadhaar [ID_1] ok"),
        ("host 192.168.1.10 down", "host [IP_1] down"),
        ("host 2001:db8::8a2e:370:7334 down", "host [IP_1] down"),
        ("key sk-proj-abcDEF1234567890ghijKLMN", "key [SECRET_1]"),
        ("key sk-ant-api03-Zx8Kq2Lm9Pw4Rt7Yb1Nc", "key [SECRET_1]"),
        ("token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "token [SECRET_1]"),
        ("slack xoxb-123456789012-abcdefghijkl", "slack [SECRET_1]"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "aws [SECRET_1] here"),
        ("secret 8f3Kq9zLm2Xw7Pv4Rt6Yb1Nc5Hd0Jg end", "secret [SECRET_1] end"),
    ],
)
def test_each_detector_replaces_its_kind(text: str, expected: str) -> None:
    assert redacted(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "iban GB83 WEST 1234 5698 7654 32 has a bad check digit",
        "ssn 000-12-3456 is never issued",
        "version 1.2.3 and port 999.1.1.1",
        "I have 3 cats, 2 dogs and 12 fish; pi is 3.14159 and it is 12:30:45",
        "order 12345678 shipped on 2024-01-01",
        "see https://example.com/docs?page=2 for the Tandem settings",
        "the word Falconry is not a term",
        "SupercalifragilisticExpialidocious is a long word but not random",
    ],
)
def test_look_alikes_stay(text: str) -> None:
    assert redacted(text, terms=("Falcon",)) == text


def test_user_terms_match_whole_words_any_case() -> None:
    assert redacted("Project FALCON ships; falcon-2 too", ("project falcon", "falcon")) == (
        "[TERM_1] ships; [TERM_2]-2 too"
    )


def test_placeholders_are_stable_across_messages_and_numbered_per_kind() -> None:
    redactor = Redactor()
    first = redactor.redact_messages(
        [{"role": "user", "content": "a@x.io and b@x.io"}, {"role": "assistant", "content": "ok A@X.io"}]
    )
    later = redactor.redact("again a@x.io, and 4111-1111-1111-1111")
    assert [m["content"] for m in first] == ["[EMAIL_1] and [EMAIL_2]", "ok [EMAIL_1]"]
    assert later == "again [EMAIL_1], and [CARD_1]"
    assert redactor.kinds_in(later) == {"EMAIL": 1, "CARD": 1}


def test_restore_puts_originals_back_and_leaves_unknown_placeholders() -> None:
    redactor = Redactor()
    text = "mail jane@corp.example, card 4111 1111 1111 1111"
    out = redactor.redact(text)
    assert redactor.restore(out) == text
    assert redactor.restore("[EMAIL_9] and [CARD_1]") == "[EMAIL_9] and 4111 1111 1111 1111"


def test_streamed_reply_is_restored_at_every_split() -> None:
    redactor = Redactor()
    redactor.redact("from ann@corp.example via 10.0.0.7")
    reply = "Sent [EMAIL_1] from [IP_1]; [brackets] and [EMAIL_] stay [X"
    expected = "Sent ann@corp.example from 10.0.0.7; [brackets] and [EMAIL_] stay [X"
    for a in range(len(reply) + 1):
        for b in range(a, len(reply) + 1):
            restorer = redactor.streaming_restorer()
            parts = [restorer.feed(reply[:a]), restorer.feed(reply[a:b]), restorer.feed(reply[b:])]
            assert "".join(parts) + restorer.flush() == expected, (a, b)


def test_streaming_restorer_does_not_hold_plain_text_back() -> None:
    redactor = Redactor()
    redactor.redact("ann@corp.example")
    restorer = redactor.streaming_restorer()
    assert restorer.feed("Hello [EMA") == "Hello "
    assert restorer.feed("IL_1] and more") == "ann@corp.example and more"
    assert restorer.feed("[" + "A" * 40) == "[" + "A" * 40


def test_importing_offload_loads_no_detector_library() -> None:
    code = ("import sys, offload, offload.redaction, offload.router; "
            "print(sorted(m for m in ('phonenumbers', 'stdnum', 'detect_secrets', 'torch', 'tvm') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "text",
    [
        "how GB82 WEST 1234 5698 7654 32 4111 1111 1111 1111",
        "ids 12 4111 1111 1111 1111 and 5500-0000-0000-0004 7",
        "DE89370400440532013000 GB82 WEST 1234 5698 7654 32",
    ],
)
def test_values_written_side_by_side_never_leak(text: str) -> None:
    out = redacted(text)
    for value in ("GB82 WEST 1234 5698 7654 32", "4111 1111 1111 1111", "5500-0000-0000-0004",
                  "DE89370400440532013000"):
        if value in text:
            assert value not in out and value.replace(" ", "") not in out.replace(" ", "")


_NETWORK_EVENTS: list[str] = []
_WATCHING = False


def _record_network(event: str, args: tuple) -> None:
    if _WATCHING and event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        _NETWORK_EVENTS.append(event)


def test_redaction_opens_no_socket_and_resolves_no_name() -> None:
    global _WATCHING
    sys.addaudithook(_record_network)  # audit hooks stay for the process; the flag scopes this one
    _WATCHING = True
    try:
        Redactor(("Kestrel",)).redact(
            "ann@corp.example +44 20 7946 0958 4111 1111 1111 1111 GB82 WEST 1234 5698 7654 32 "
            "536-22-8901 10.0.0.1 ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 eyJhbGciOiJIUzI1NiJ9."
            "eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U Kestrel"
        )
    finally:
        _WATCHING = False
    assert _NETWORK_EVENTS == []
