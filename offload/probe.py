"""Linear probes on the local model's hidden states: what the model "knows" about whether its
answer is right, read two thirds of the way through the model (engine.api.HiddenStates' middle
states) at the end of the prompt (before any token), averaged over its answer, and both.
On SmolLM2-135M's general eval set, the same answers scored both ways, the confidence score
with these probes reached a held-out AUROC of 0.85, with probes on the final hidden state (at
the prompt's and the answer's end) 0.80.

Ridge regression on the right/wrong label in numpy (closed form: a refit is instant), fitted per
model on the calibrate half; its output becomes one more feature of the confidence score
(offload.confidence.Calibration), whose logistic fit scales it."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

PROBE_STATES = {
    "probe_prompt": "prompt_middle",
    "probe_answer": "answer_middle",
    "probe_both": "prompt_middle+answer_middle",
}
"""Each probe feature and the hidden states (engine.api.HiddenStates fields, "+" joins them) it
reads. A calibration stored before carries its own state names (prompt_end, answer_end) and
keeps reading those."""
L2_GRID = (100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)
"""Penalties tried (on standardised states; a few hundred answers against hundreds of dimensions
need strong ones: on SmolLM2-135M, 1000-3000 won); the best cross-validated squared error wins."""
_LOGIT_LIMIT = 12.0


def has_states(hidden: object | None) -> bool:
    """Whether `hidden` (an engine.api.HiddenStates or None) holds every state the probes read."""
    return hidden is not None and all(
        len(getattr(hidden, part)) > 0 for state in PROBE_STATES.values() for part in state.split("+")
    )


def state_vector(hidden: object, state: str) -> np.ndarray:
    """The probe's input from an engine.api.HiddenStates: one state, or several joined."""
    return np.concatenate([np.asarray(getattr(hidden, part), dtype=np.float64) for part in state.split("+")])


@dataclass(frozen=True)
class HiddenProbe:
    """output = weights . (state - mean) / scale + bias (about +1 right, -1 wrong); `feature`
    names the score's input."""

    feature: str
    state: str
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    l2: float = 0.0

    def logit(self, vector: npt.ArrayLike) -> float:
        x = np.asarray(vector, dtype=np.float64)
        if x.shape != (len(self.weights),):
            raise ValueError(f"{self.feature}: a hidden state of {x.shape} for a probe of {len(self.weights)}")
        z = (x - np.array(self.mean)) / np.array(self.scale)
        return float(np.clip(z @ np.array(self.weights) + self.bias, -_LOGIT_LIMIT, _LOGIT_LIMIT))


def _standardised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return (x - mean) / scale, mean, scale


def _ridge(z: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Ridge regression of +1 (right) / -1 (wrong) on standardised states, the bias unpenalised
    (the centred target); weights then bias."""
    target = 2.0 * y - 1.0
    bias = float(target.mean())
    weights = np.linalg.solve(z.T @ z + l2 * np.eye(z.shape[1]), z.T @ (target - bias))
    return np.append(weights, bias)


def _folds(n: int, folds: int, seed: int = 0) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[k::folds] for k in range(folds)]


def _fit_with(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, mean, scale = _standardised(x)
    return _ridge(z, y, l2), mean, scale


def _logits(theta: np.ndarray, mean: np.ndarray, scale: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.clip(((x - mean) / scale) @ theta[:-1] + theta[-1], -_LOGIT_LIMIT, _LOGIT_LIMIT)


def out_of_fold(states: npt.ArrayLike, good: Sequence[bool], l2: float, folds: int = 5) -> np.ndarray:
    """Each row's probe output from a probe fitted without it: what the score's fit must learn
    from (a probe's outputs on its own training rows are far surer than on new answers)."""
    x, y = np.asarray(states, dtype=np.float64), np.asarray(good, dtype=np.float64)
    result = np.zeros(len(x))
    for held in _folds(len(x), folds):
        train = np.setdiff1d(np.arange(len(x)), held)
        if len(set(y[train])) < 2:
            continue
        theta, mean, scale = _fit_with(x[train], y[train], l2)
        result[held] = _logits(theta, mean, scale, x[held])
    return result


def choose_l2(states: npt.ArrayLike, good: Sequence[bool], grid: Sequence[float] = L2_GRID) -> float:
    """The penalty whose out-of-fold outputs have the lowest squared error."""
    target = 2.0 * np.asarray(good, dtype=np.float64) - 1.0
    best, best_loss = grid[-1], np.inf
    for l2 in grid:
        loss = float(np.mean((out_of_fold(states, good, l2) - target) ** 2))
        if loss < best_loss:
            best, best_loss = l2, loss
    return best


def fit_probe(feature: str, states: npt.ArrayLike, good: Sequence[bool], l2: float) -> HiddenProbe:
    """The probe for `feature` (a PROBE_STATES key) on every row."""
    x, y = np.asarray(states, dtype=np.float64), np.asarray(good, dtype=np.float64)
    theta, mean, scale = _fit_with(x, y, l2)
    return HiddenProbe(feature, PROBE_STATES[feature], _floats(mean), _floats(scale), _floats(theta[:-1]),
                       float(theta[-1]), l2)


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
