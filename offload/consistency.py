"""Sample consistency: does the local model give the same answer when asked again?

A model that knows a fact says it every time; one that guesses says something else on each draw.
This module draws a few extra sampled answers to a prompt through any engine and compares them to
the answer the router judges, by the words each adds to the prompt (its first sentence: sampled
continuations diverge after the answer itself). The two figures become features of the confidence
score (offload.confidence): `sample_agreement`, the share of draws that add the same words, and
`sample_overlap`, their mean word overlap (Jaccard).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.api import Engine, FinishEvent, GenerationRequest, Message
from offload.confidence import SAMPLE_FEATURES, Calibration, answer_confidence

__all__ = ["SAMPLE_FEATURES", "answer_key", "consistency_features", "could_flip", "draw_samples"]
SAMPLE_COUNT = 4
"""Extra answers drawn per prompt by `tandem models calibrate` (and so by the router, for that fit)."""
SAMPLE_MAX_TOKENS = 16
"""Tokens per extra draw: the first sentence, where a short answer says what it says."""
SAMPLE_TEMPERATURE = 1.0
"""Draws at the model's unscaled distribution: at a model's own low temperature (SmolLM2: 0.2) a
guess repeats itself nearly as often as a known fact does, and agreement says little."""
_SENTENCE_END = re.compile(r"(?<!\d)[.!?](?!\d)|\n")
_NOT_WORD = re.compile(r"[^\w.]+")
_FILLER = frozenset("a an the is are was were of to in on it its and or be that this".split())


def _words(text: str) -> list[str]:
    """Lower case, no accents, punctuation as spaces (a dot stays inside a number: 3.5)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return [w.strip(".") for w in _NOT_WORD.sub(" ", text).split() if w.strip(".")]


def answer_key(answer: str, prompt: str = "") -> frozenset[str]:
    """The words the answer's first sentence adds to the prompt: what it claims ("Paris" to "What is
    the capital of France?"). Filler words and the prompt's own words say nothing."""
    first = _SENTENCE_END.split(answer.strip(), maxsplit=1)[0] if answer.strip() else ""
    asked = set(_words(prompt))
    return frozenset(w for w in _words(first) if w not in asked and w not in _FILLER)


def consistency_features(answer: str, samples: Sequence[str], prompt: str = "") -> dict[str, float]:
    """How far the draws agree with the answer; nothing without draws (the score then treats the
    features as neutral)."""
    if not samples:
        return {}
    key = answer_key(answer, prompt)
    keys = [answer_key(s, prompt) for s in samples]
    same = sum(k == key for k in keys)
    overlap = sum(len(k & key) / len(k | key) if k | key else 1.0 for k in keys)
    return {"sample_agreement": same / len(keys), "sample_overlap": overlap / len(keys)}


def uses_samples(calibration: Calibration) -> bool:
    return any(name in SAMPLE_FEATURES and w for name, w in zip(calibration.names, calibration.weights))


def could_flip(values: Mapping[str, float], calibration: Calibration, cutoff: float) -> bool:
    """Whether drawing samples could change the route: the answer's confidence with the draws all
    disagreeing falls below the cutoff and with them all agreeing does not. Elsewhere the route is
    decided already, and the draws would only cost time (on SmolLM2-135M: most answers)."""
    if not uses_samples(calibration):
        return False
    low = answer_confidence({**values, **dict.fromkeys(SAMPLE_FEATURES, 0.0)}, False, calibration)
    high = answer_confidence({**values, **dict.fromkeys(SAMPLE_FEATURES, 1.0)}, False, calibration)
    return low < cutoff <= high


def draw_samples(engine: Engine, messages: Sequence[Message], n: int, *, seed: int = 0, skip: int = 0,
                 max_tokens: int = SAMPLE_MAX_TOKENS, temperature: float | None = SAMPLE_TEMPERATURE,
                 sampling: Mapping[str, Any] | None = None) -> list[str]:
    """`n` extra answers to the conversation, each drawn with its own seed (from `seed` on, past the
    first `skip` draws: a top-up draws new ones) at `temperature` (None: the model's own), the other
    settings the model's own or `sampling`'s."""
    settings = {**dict(sampling or {}), **({} if temperature is None else {"temperature": temperature})}
    answers = []
    for k in range(skip, skip + n):
        request = GenerationRequest(messages=list(messages), max_tokens=max_tokens,
                                    seed=seed * 1000 + k + 1, **settings)
        answers.append(_text(engine.generate(request)))
    return answers


def _text(events: Iterable[object]) -> str:
    return "".join(getattr(e, "text", "") for e in events if not isinstance(e, FinishEvent))
