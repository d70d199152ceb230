"""Choosing the next token from a row of logits, in numpy: greedy, temperature, top-p and an
optional repetition penalty, with log-probabilities and alternatives from the RAW logits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

TOP_ALTERNATIVES = 5


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    """0 means greedy."""
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    """>1 discourages tokens already seen (the CTRL rule: divide positive logits, multiply negative)."""
    top_k_alternatives: int = TOP_ALTERNATIVES


@dataclass(frozen=True)
class SampledToken:
    token_id: int
    logprob: float
    """log p(token) under the raw logits, whatever the temperature or penalties."""
    alternatives: tuple[tuple[int, float], ...]
    """The most likely (token_id, logprob) pairs under the raw logits, best first."""


def make_rng(seed: int | None) -> np.random.Generator:
    """A generator: seeded for reproducible sampling, else from fresh entropy."""
    return np.random.default_rng(seed)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-probabilities of a row of logits, computed in float64."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max()
    return shifted - np.log(np.exp(shifted).sum())


def top_alternatives(logprobs: np.ndarray, k: int = TOP_ALTERNATIVES) -> tuple[tuple[int, float], ...]:
    """The k most likely tokens, best first (ties go to the lower id)."""
    k = min(k, logprobs.shape[0])
    candidates = np.argpartition(-logprobs, k - 1)[:k]
    ordered = sorted(candidates.tolist(), key=lambda i: (-logprobs[i], i))
    return tuple((int(i), float(logprobs[i])) for i in ordered)


def sample(
    logits: np.ndarray,
    params: SamplingParams,
    rng: np.random.Generator,
    previous_ids: Iterable[int] = (),
) -> SampledToken:
    """Pick the next token. Greedy when temperature is 0 (or top_p keeps a single token)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    raw_logprobs = log_softmax(logits)
    adjusted = _penalise(logits, params.repetition_penalty, previous_ids)
    if params.temperature <= 0:
        token_id = int(np.argmax(adjusted))
    else:
        token_id = _sample_top_p(log_softmax(adjusted / params.temperature), params.top_p, rng)
    return SampledToken(
        token_id=token_id,
        logprob=float(raw_logprobs[token_id]),
        alternatives=top_alternatives(raw_logprobs, params.top_k_alternatives),
    )


def _penalise(logits: np.ndarray, penalty: float, previous_ids: Iterable[int]) -> np.ndarray:
    if penalty == 1.0:
        return logits
    # A set rather than np.unique, whose first call imports numpy.ma (tens of ms at start-up).
    seen = np.fromiter(set(previous_ids), dtype=np.int64)
    if seen.size == 0:
        return logits
    adjusted = logits.copy()
    values = adjusted[seen]
    adjusted[seen] = np.where(values > 0, values / penalty, values * penalty)
    return adjusted


def _sample_top_p(logprobs: np.ndarray, top_p: float, rng: np.random.Generator) -> int:
    """Sample from the smallest set of most likely tokens whose mass reaches top_p."""
    order = np.argsort(-logprobs, kind="stable")  # ties keep the lower id first, as argmax does
    probs = np.exp(logprobs[order])
    cumulative = np.cumsum(probs)
    keep = int(np.searchsorted(cumulative, min(top_p, 1.0) * cumulative[-1], side="left")) + 1
    kept = cumulative[:keep]
    draw = rng.random() * kept[-1]
    return int(order[min(int(np.searchsorted(kept, draw, side="right")), keep - 1)])
