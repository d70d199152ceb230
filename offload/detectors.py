"""Finding personal data and secrets in text, offline: each detector returns typed spans.

Checksums come from well-kept libraries (phonenumbers, python-stdnum, detect-secrets' patterns),
imported lazily so `import offload` stays cheap. None of them is asked to reach the network.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache

Kind = str
"""A placeholder kind: EMAIL, PHONE, CARD, IBAN, SSN, ID, IP, SECRET or TERM."""


@dataclass(frozen=True)
class Finding:
    kind: Kind
    start: int
    end: int
    text: str


Detector = Callable[[str], Iterable[Finding]]


def _valid_subspans(
    run: re.Match[str], token: re.Pattern[str], is_valid: Callable[[str], bool], max_groups: int = 10
) -> Iterable[tuple[int, int]]:
    """Every valid span within a run of grouped characters ("32 4111 1111 1111 1111") that starts
    and ends on group boundaries: a number written next to another must not hide inside a longer
    invalid candidate. detect() merges the overlaps."""
    groups = [(run.start() + m.start(), run.start() + m.end()) for m in token.finditer(run.group())]
    for i in range(len(groups)):
        for j in range(i, min(i + max_groups, len(groups))):
            if is_valid(run.string[groups[i][0] : groups[j][1]]):
                yield groups[i][0], groups[j][1]


_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


def find_emails(text: str) -> Iterable[Finding]:
    for match in _EMAIL.finditer(text):
        yield Finding("EMAIL", match.start(), match.end(), match.group())


# A fallback region makes national formats parse too; numbers written with +CC parse whatever it is.
_PHONE_REGION = "US"
# Digit groups joined by the separators phone numbers are written with.
_PHONE_RUN = re.compile(r"(?<![\w+])\(?\+?\d[\d() .-]*\d(?!\w)")
_PHONE_GROUP = re.compile(r"\+?\d+")


# A number glued to a code by a dash or slash (INV-2026-000123), or named as a reference by the
# words just before it, is an invoice, order or ticket number, not a phone number.
_REFERENCE_BEFORE = re.compile(
    r"(?:[A-Za-z]{1,12}[-/#]|(?i:\b(?:invoice|inv|order|ord|po|ref|reference|ticket|case|receipt|"
    r"tracking|booking|confirmation|transaction|shipment)\b)(?i:[\s#:.-]|nos?\b|numbers?\b|ids?\b)*)$"
)


def _is_reference_number(text: str, start: int) -> bool:
    return bool(_REFERENCE_BEFORE.search(text[max(0, start - 40) : start]))


def find_phones(text: str) -> Iterable[Finding]:
    """libphonenumber's matcher, plus its validator on the digit groups of every number-like
    run, so that a number written next to other digits is still found; reference numbers
    (invoices, orders, tickets) are left alone."""
    if not any(ch.isdigit() for ch in text):
        return
    import phonenumbers

    matcher = phonenumbers.PhoneNumberMatcher(
        text, _PHONE_REGION, leniency=phonenumbers.Leniency.VALID
    )
    for match in matcher:
        if not _is_reference_number(text, match.start):
            yield Finding("PHONE", match.start, match.end, match.raw_string)

    def is_phone(candidate: str) -> bool:
        if sum(ch.isdigit() for ch in candidate) < 7:
            return False
        try:
            number = phonenumbers.parse(candidate, _PHONE_REGION)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_valid_number(number)

    for run in _PHONE_RUN.finditer(text):
        if _is_reference_number(text, run.start()):
            continue
        for start, end in _valid_subspans(run, _PHONE_GROUP, is_phone, max_groups=6):
            yield Finding("PHONE", start, end, text[start:end])


# Digits grouped by single spaces or dashes, as cards are written; each card is 13 to 19 digits.
_DIGIT_RUN = re.compile(r"(?<![\d-])\d+(?:[ -]\d+)*(?![\d-])")
_DIGITS = re.compile(r"\d+")


def _is_card(candidate: str) -> bool:
    from stdnum import luhn

    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn.is_valid(digits)


def find_cards(text: str) -> Iterable[Finding]:
    for run in _DIGIT_RUN.finditer(text):
        for start, end in _valid_subspans(run, _DIGITS, _is_card):
            yield Finding("CARD", start, end, text[start:end])


_ALNUM_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Z0-9]+(?: [A-Z0-9]+)*(?![A-Za-z0-9])")
_ALNUM = re.compile(r"[A-Z0-9]+")
_IBAN_START = re.compile(r"[A-Z]{2}\d{2}")


def _is_iban(candidate: str) -> bool:
    from stdnum import iban

    return bool(_IBAN_START.match(candidate)) and 15 <= len(candidate) <= 42 and iban.is_valid(candidate)


def find_ibans(text: str) -> Iterable[Finding]:
    for run in _ALNUM_RUN.finditer(text):
        for start, end in _valid_subspans(run, _ALNUM, _is_iban):
            yield Finding("IBAN", start, end, text[start:end])


_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
# Spanish DNI/NIE (8 digits and a letter), Aadhaar (12 digits), NHS (10 digits), as written.
_NATIONAL_ID = re.compile(
    r"(?<![A-Za-z0-9-])(?:[XYZ]?\d{7,8}-?[A-Z]|\d{4} ?\d{4} ?\d{4}|\d{3} ?\d{3} ?\d{4})(?![A-Za-z0-9-])"
)
# Validators whose checksums make false positives on ordinary text rare.
_NATIONAL_ID_MODULES = ("stdnum.es.dni", "stdnum.es.nie", "stdnum.in_.aadhaar", "stdnum.gb.nhs")


def find_ssns(text: str) -> Iterable[Finding]:
    from stdnum.us import ssn

    for match in _SSN.finditer(text):
        if ssn.is_valid(match.group()):
            yield Finding("SSN", match.start(), match.end(), match.group())


def find_national_ids(text: str) -> Iterable[Finding]:
    """Other national identifiers that carry a check digit (Spanish DNI/NIE, Aadhaar, NHS)."""
    import importlib

    validators = [importlib.import_module(name) for name in _NATIONAL_ID_MODULES]
    for match in _NATIONAL_ID.finditer(text):
        candidate = match.group()
        if any(module.is_valid(candidate) for module in validators):
            yield Finding("ID", match.start(), match.end(), candidate)


# A full stop may end the sentence after an address; only a further digit group rules it out.
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def find_ips(text: str) -> Iterable[Finding]:
    for pattern, version in ((_IPV4, 4), (_IPV6, 6)):
        for match in pattern.finditer(text):
            try:
                address = ipaddress.ip_address(match.group())
            except ValueError:
                continue
            if address.version == version and not (version == 6 and match.group() == "::"):
                yield Finding("IP", match.start(), match.end(), match.group())


# Prefixes detect-secrets' own patterns miss (newer OpenAI, Anthropic, fine-grained GitHub, ...).
_KEY_PREFIX = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-(?:ant-|proj-)?|ghp_|gho_|ghs_|ghu_|github_pat_|glpat-|hf_|"
    r"xox[abposr]-|AKIA|ASIA)[A-Za-z0-9_\-]{16,}"
)
_TOKEN_LIKE = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{20,}(?![A-Za-z0-9+/_=-])")


@cache
def _secret_patterns() -> tuple[re.Pattern[str], ...]:
    """detect-secrets' vendor patterns, used as plain regexes: its `verify` (network) never runs."""
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.github_token import GitHubTokenDetector
    from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
    from detect_secrets.plugins.jwt import JwtTokenDetector
    from detect_secrets.plugins.npm import NpmDetector
    from detect_secrets.plugins.openai import OpenAIDetector
    from detect_secrets.plugins.pypi_token import PypiTokenDetector
    from detect_secrets.plugins.sendgrid import SendGridDetector
    from detect_secrets.plugins.slack import SlackDetector
    from detect_secrets.plugins.stripe import StripeDetector
    from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
    from detect_secrets.plugins.twilio import TwilioKeyDetector

    plugins = (AWSKeyDetector, GitHubTokenDetector, GitLabTokenDetector, JwtTokenDetector,
               NpmDetector, OpenAIDetector, PypiTokenDetector, SendGridDetector, SlackDetector,
               StripeDetector, TelegramBotTokenDetector, TwilioKeyDetector)
    return tuple(pattern for plugin in plugins for pattern in plugin.denylist)


@cache
def _entropy() -> Callable[[str], float]:
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString

    return Base64HighEntropyString().calculate_shannon_entropy


def _looks_random(token: str) -> bool:
    """Long, mixing letters and digits, and near the entropy ceiling for its length."""
    import math

    has_digit = any(ch.isdigit() for ch in token)
    has_alpha = any(ch.isalpha() for ch in token)
    if not (has_digit and has_alpha):
        return False
    ceiling = math.log2(min(len(token), 64))
    return _entropy()(token) >= min(4.5, 0.8 * ceiling)


def _secret_span(match: re.Match[str]) -> tuple[int, int]:
    """The secret itself: a pattern's last long group (past `key =` context), else all of it."""
    for group in range(match.re.groups, 0, -1):
        if len(match.group(group) or "") >= 8:
            return match.span(group)
    return match.span()


def find_secrets(text: str) -> Iterable[Finding]:
    for pattern in (*_secret_patterns(), _KEY_PREFIX):
        for match in pattern.finditer(text):
            start, end = _secret_span(match)
            if end - start >= 8:
                yield Finding("SECRET", start, end, text[start:end])
    for match in _TOKEN_LIKE.finditer(text):
        if _looks_random(match.group()):
            yield Finding("SECRET", match.start(), match.end(), match.group())


def term_detector(terms: Sequence[str]) -> Detector:
    """The user's own words, matched case-insensitively on word boundaries."""
    cleaned = sorted({term.strip() for term in terms if term.strip()}, key=len, reverse=True)
    if not cleaned:
        return lambda text: ()
    pattern = re.compile(
        "|".join(rf"(?<!\w){re.escape(term)}(?!\w)" for term in cleaned), re.IGNORECASE
    )

    def find_terms(text: str) -> Iterable[Finding]:
        for match in pattern.finditer(text):
            yield Finding("TERM", match.start(), match.end(), match.group())

    return find_terms


# Earlier detectors win overlaps at equal length: the strictest reading first. A checksum-proven
# card or IBAN beats a random-looking token, and a dotted quad is an IP address, not a phone.
BUILTIN_DETECTORS: tuple[Detector, ...] = (
    find_emails, find_cards, find_ibans, find_ips, find_secrets, find_ssns, find_phones,
    find_national_ids,
)


def detect(text: str, detectors: Sequence[Detector]) -> list[Finding]:
    """Non-overlapping findings in text order. Overlapping candidates merge into one span, so
    nothing any detector flagged is left visible; it takes the kind of the longest candidate
    (ties: the earlier detector)."""
    candidates = [(rank, f) for rank, detector in enumerate(detectors) for f in detector(text)]
    candidates.sort(key=lambda c: (c[1].start, c[1].end))
    merged: list[Finding] = []
    best: list[tuple[int, int]] = []  # per merged span: (-length, rank) of its strongest candidate
    for rank, finding in candidates:
        strength = (-(finding.end - finding.start), rank)
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            kind = finding.kind if strength < best[-1] else last.kind
            best[-1] = min(best[-1], strength)
            end = max(last.end, finding.end)
            merged[-1] = Finding(kind, last.start, end, text[last.start : end])
        else:
            merged.append(finding)
            best.append(strength)
    return merged
