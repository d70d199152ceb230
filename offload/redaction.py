"""Reversible redaction: personal data becomes typed, numbered placeholders ([EMAIL_1]) before
anything leaves, and the placeholders become the originals again in the reply, even mid-stream.

One Redactor per conversation keeps the mapping, so the same value gets the same placeholder
on every turn and in every message that leaves.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from offload.detectors import BUILTIN_DETECTORS, Detector, detect, term_detector

_PLACEHOLDER = re.compile(r"\[([A-Z]+)_(\d+)\]")
# A cut-off placeholder at the end of a chunk: "[", "[EMA", "[EMAIL_", "[EMAIL_1".
_PARTIAL_PLACEHOLDER = re.compile(r"\[[A-Z]*(?:_\d*)?$")
_LONGEST_PLACEHOLDER = 24


class Redactor:
    """Replaces findings with placeholders and remembers them, for one conversation."""

    def __init__(self, terms: Sequence[str] = (), detectors: Sequence[Detector] | None = None):
        base = BUILTIN_DETECTORS if detectors is None else tuple(detectors)
        self._detectors = (term_detector(terms), *base)
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counts: Counter[str] = Counter()

    @property
    def mapping(self) -> Mapping[str, str]:
        """Placeholder -> original value; stays on this machine."""
        return dict(self._by_placeholder)

    def redact(self, text: str) -> str:
        pieces: list[str] = []
        cursor = 0
        for finding in detect(text, self._detectors):
            pieces.append(text[cursor : finding.start])
            pieces.append(self._placeholder_for(finding.kind, finding.text))
            cursor = finding.end
        pieces.append(text[cursor:])
        return "".join(pieces)

    def redact_messages(self, messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
        return [{**message, "content": self.redact(message["content"])} for message in messages]

    def kinds_in(self, text: str) -> dict[str, int]:
        """Placeholder kind -> how many distinct values of it appear in already-redacted text."""
        seen = {m.group() for m in _PLACEHOLDER.finditer(text) if m.group() in self._by_placeholder}
        return dict(Counter(_PLACEHOLDER.fullmatch(p).group(1) for p in seen))  # type: ignore[union-attr]

    def restore(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self._by_placeholder.get(m.group(), m.group()), text)

    def streaming_restorer(self) -> StreamingRestorer:
        return StreamingRestorer(self)

    def _placeholder_for(self, kind: str, value: str) -> str:
        key = (kind, _normalise(kind, value))
        placeholder = self._by_value.get(key)
        if placeholder is None:
            self._counts[kind] += 1
            placeholder = f"[{kind}_{self._counts[kind]}]"
            self._by_value[key] = placeholder
            self._by_placeholder[placeholder] = value
        return placeholder


def _normalise(kind: str, value: str) -> str:
    """The same card or email written two ways still gets one placeholder."""
    if kind in ("CARD", "IBAN", "PHONE", "SSN", "ID"):
        return re.sub(r"[^0-9A-Za-z+]", "", value).upper()
    if kind in ("EMAIL", "TERM"):
        return value.lower()
    return value


class StreamingRestorer:
    """Restores placeholders in a streamed reply, holding back a possible placeholder cut
    at a chunk boundary until the next chunk completes or rules it out."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = ""

    def feed(self, chunk: str) -> str:
        text = self._pending + chunk
        partial = _PARTIAL_PLACEHOLDER.search(text)
        if partial and len(text) - partial.start() <= _LONGEST_PLACEHOLDER:
            text, self._pending = text[: partial.start()], text[partial.start() :]
        else:
            self._pending = ""
        return self._redactor.restore(text)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return self._redactor.restore(text)
