"""Scoring a session against a reference: a greedy path, logits along given tokens, and the
perplexity those logits give. Plain numpy over `prefill`/`decode`; tests and bench/ share it."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class StepSession(Protocol):
    """What scoring needs of a session: start over, prefill a prompt, decode one token."""

    def reset(self) -> None: ...

    def prefill(self, token_ids: list[int]) -> np.ndarray: ...

    def decode(self, token_id: int) -> np.ndarray: ...


def greedy_run(session: StepSession, prompt: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """From a fresh session: the prompt plus `steps` argmax tokens, and the logits row of the
    prefill and of each step (steps + 1 rows; the last is after the final token)."""
    session.reset()
    logits = [session.prefill(prompt)]
    tokens = list(prompt)
    for _ in range(steps):
        tokens.append(int(np.argmax(logits[-1])))
        logits.append(session.decode(tokens[-1]))
    return tokens, logits


def forced_logits(session: StepSession, prompt: list[int], continuation: list[int]) -> list[np.ndarray]:
    """From a fresh session: the logits row after the prompt, then after each given token, so
    two engines fed the same tokens line up position by position."""
    session.reset()
    logits = [session.prefill(prompt)]
    for token in continuation:
        logits.append(session.decode(token))
    return logits


def passage_logits(session: StepSession, ids: list[int]) -> np.ndarray:
    """The rows predicting ids[1:], one token at a time (len(ids) - 1 rows), as decode sees them."""
    return np.stack(forced_logits(session, ids[:1], ids[1:-1]))


def perplexity(ids: list[int] | np.ndarray, logits: np.ndarray) -> float:
    """exp of the mean negative log-probability of ids[1:] under rows predicting them, in float64."""
    wide = np.asarray(logits, dtype=np.float64)
    shifted = wide - wide.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    targets = np.asarray(ids)[1:]
    return float(np.exp(-log_probs[np.arange(len(targets)), targets].mean()))
