"""Scoring a prompt for a speculative-decoding client: the raw log-probability of every prompt
token and the top alternatives at each position, plus the distribution of the next token.

Rows come from the engine's single-sequence session: one prefill that returns every row's logits
(prefill_all_logits), or a decode step per token on a library built without it. They are kept
for the sequence last scored, so a client extending its previous prompt by a k-token draft pays
for the k new rows only."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine import sampling
from engine.errors import ContextWindowExceeded, EngineError

if TYPE_CHECKING:  # the wire format imports this module; tvm loads only with an engine
    from engine.tvm_backend.session import ModelSession

MAX_TOP = 20
"""Alternatives per position at most, as vLLM's default --max-logprobs."""


@dataclass(frozen=True)
class PositionScore:
    """Position i of a prompt: its token, log p(token | tokens before) and the best alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class ScoredPrompt:
    positions: list[PositionScore]
    """One per prompt token after the first (the first has no context to be scored in)."""
    next_logprobs: np.ndarray
    """Raw log-probabilities of the token after the whole prompt (float64, vocabulary-long)."""


@dataclass
class _Row:
    top: tuple[tuple[int, float], ...]
    next_logprob: float | None = None
    """log p of the token that followed this position, once it is known."""

    def scored(self) -> float:
        """next_logprob of a position that has a next token (every row but the last, after _extend)."""
        assert self.next_logprob is not None, "a position with a next token was left unscored"
        return float(self.next_logprob)


class PromptScorer:
    """Scores prompts on a TVMEngine's session; one at a time (it holds the engine's lock)."""

    def __init__(self, session: ModelSession, lock: threading.Lock, context_window: int) -> None:
        self._session = session
        self._lock = lock
        self._window = context_window
        self._tokens: list[int] = []
        self._rows: list[_Row] = []
        self._last: np.ndarray | None = None

    @property
    def vocab_rows(self) -> int:
        return self._session.vocab_rows

    def score(self, token_ids: Sequence[int], top_k: int) -> ScoredPrompt:
        ids = [int(t) for t in token_ids]
        if not ids:
            raise EngineError("The prompt is empty: give at least one token to score.")
        if len(ids) + 1 > self._window:
            raise ContextWindowExceeded(len(ids), self._window)
        k = max(1, min(top_k, MAX_TOP))
        with self._lock:
            self._extend(ids)
            assert self._last is not None
            positions = [
                PositionScore(ids[i], self._rows[i - 1].scored(), self._rows[i - 1].top[:k])
                for i in range(1, len(ids))
            ]
            return ScoredPrompt(positions, self._last)

    def _extend(self, ids: list[int]) -> None:
        """Make the cached rows cover `ids`: keep the shared prefix, step through the rest."""
        session = self._session
        if tuple(self._tokens) != session.tokens:
            self._tokens, self._rows, self._last = [], [], None  # someone else used the session
        shared = 0
        limit = min(len(self._tokens), len(ids))
        while shared < limit and self._tokens[shared] == ids[shared]:
            shared += 1
        if shared == len(ids) == len(self._tokens) and self._last is not None:
            return
        if shared == 0:
            session.reset()
            self._tokens, self._rows, self._last = [], [], None
        elif shared < len(self._tokens):
            # Rolls the cache back to the shared prefix, recomputing its last row.
            logits, _ = session.prefill_reusing_cache(ids[:shared])
            del self._tokens[shared:], self._rows[shared:]
            self._rows[-1].next_logprob = None
            self._last = sampling.log_softmax(logits)
        new = ids[shared:]
        try:
            if session.scores_rows:
                rows = list(session.prefill_rows(new)) if new else []
            else:
                rows = [session.decode(token) for token in new]
        except EngineError:
            self._tokens, self._rows, self._last = [], [], None
            raise
        for token, logits in zip(new, rows):
            if self._last is not None:
                self._rows[-1].next_logprob = float(self._last[token])
            self._last = sampling.log_softmax(logits)
            self._tokens.append(token)
            self._rows.append(_Row(sampling.top_alternatives(self._last, MAX_TOP)))


def scorer_for(engine: object) -> PromptScorer | None:
    """A scorer on Tandem's TVM runtime; None for engines without a single-sequence session."""
    session = getattr(engine, "session", None)
    lock = getattr(engine, "_lock", None)
    if session is None or not hasattr(session, "decode") or lock is None:
        return None
    return PromptScorer(session, lock, engine.context_window)  # type: ignore[attr-defined]
