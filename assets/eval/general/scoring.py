"""Grades a short answer against its accepted answers by normalised match.

Both sides are normalised (case, accents, punctuation, thousands separators, number words up to
twenty); an answer is correct when an accepted answer appears in it as whole words. Items with
`choices` (the answer must name one of several options that all appear in the prompt) are
correct when the first option the answer names is an accepted one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20",
}
_THOUSANDS = re.compile(r"(?<=\d)[,\u202f\u00a0](?=\d{3}\b)")
_TRAILING_ZERO = re.compile(r"\b(\d+)\.0+\b")
_NOT_WORD = re.compile(r"[^0-9a-z.]+")


def normalise(text: str) -> str:
    """Lower case, no accents, punctuation as spaces, '1,000' as '1000', 'seven' as '7'."""
    text = unicodedata.normalize("NFKD", text.replace("ß", "ss"))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = _THOUSANDS.sub("", text)
    text = _TRAILING_ZERO.sub(r"\1", text)
    # A dot stays only inside a number (3.14) or a name (console.log); elsewhere it ends a sentence.
    text = re.sub(r"\.(?!\w)|(?<!\w)\.", " ", text)
    words = _NOT_WORD.sub(" ", text).split()
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words)


def _find(haystack: list[str], needle: list[str]) -> int:
    """Index of the first whole-word occurrence of needle in haystack, or -1."""
    if not needle:
        return -1
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return -1


def mentions(answer: str, phrase: str) -> bool:
    return _find(normalise(answer).split(), normalise(phrase).split()) >= 0


def is_correct(answer: str, accept: Sequence[str], choices: Sequence[str] = ()) -> bool:
    """Whether `answer` gives one of `accept` (see the module docstring for `choices`)."""
    words = normalise(answer).split()
    if choices:
        found = [(_find(words, normalise(c).split()), c) for c in choices]
        named = sorted((i, c) for i, c in found if i >= 0)
        if not named:
            return False
        first = normalise(named[0][1])
        return any(normalise(a) == first for a in accept)
    return any(_find(words, normalise(a).split()) >= 0 for a in accept)
