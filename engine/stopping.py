"""When generation stops: stop token ids, and stop strings that may arrive split across several
text deltas (text that could still become a stop string is held back until it is decided)."""

from __future__ import annotations

from collections.abc import Iterable


class StopChecker:
    def __init__(self, stop_strings: Iterable[str] = (), stop_token_ids: Iterable[int] = ()) -> None:
        self._strings = tuple(dict.fromkeys(s for s in stop_strings if s))
        self._token_ids = frozenset(stop_token_ids)
        self._held = ""
        self.stopped = False

    def is_stop_token(self, token_id: int) -> bool:
        return token_id in self._token_ids

    def push(self, delta: str) -> str:
        """The part of the text so far that is safe to show. After a stop string, `stopped` is
        True and the text from the stop string on is dropped."""
        if self.stopped:
            return ""
        text = self._held + delta
        cut = min((i for i in (text.find(s) for s in self._strings) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """Text held back at the end of generation (it never became a stop string)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        longest = 0
        for stop in self._strings:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
