"""A linear probe on the local model's final hidden state: what the model "knows" about whether it
can answer, read at the end of the prompt (before any token) and at the end of its answer.

A ridge-regularised logistic regression in numpy, fitted per model on the calibrate half; its
logit becomes one more feature of the confidence score (offload.confidence.Calibration)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

PROBE_STATES = {"probe_prompt": "prompt_end", "probe_answer": "answer_end"}
"""Each probe feature and the hidden state (engine.api.HiddenStates field) it reads."""
L2_GRID = (1.0, 10.0, 100.0, 1000.0)
"""Penalties tried (on standardised states); the one with the best cross-validated log-loss wins."""
_LOGIT_LIMIT = 12.0


@dataclass(frozen=True)
class HiddenProbe:
    """logit = weights . (state - mean) / scale + bias; `feature` names the score's input."""

    feature: str
    state: str
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    l2: float = 0.0

    def logit(self, vector: Sequence[float]) -> float:
        x = np.asarray(vector, dtype=np.float64)
        if x.shape != (len(self.weights),):
            raise ValueError(f"{self.feature}: a hidden state of {x.shape} for a probe of {len(self.weights)}")
        z = (x - np.array(self.mean)) / np.array(self.scale)
        return float(np.clip(z @ np.array(self.weights) + self.bias, -_LOGIT_LIMIT, _LOGIT_LIMIT))


def _standardised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return (x - mean) / scale, mean, scale


def _ridge_logistic(z: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Newton's method on the L2-penalised log-loss (the bias unpenalised); weights then bias."""
    z1 = np.hstack([z, np.ones((len(z), 1))])
    theta = np.zeros(z1.shape[1])
    penalty = np.full(z1.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-np.clip(z1 @ theta, -40, 40)))
        gradient = z1.T @ (p - y) + penalty * theta
        hessian = (z1 * (p * (1 - p))[:, None]).T @ z1 + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return theta


def _folds(n: int, folds: int, seed: int = 0) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[k::folds] for k in range(folds)]


def _fit_with(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, mean, scale = _standardised(x)
    return _ridge_logistic(z, y, l2), mean, scale


def _logits(theta: np.ndarray, mean: np.ndarray, scale: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.clip(((x - mean) / scale) @ theta[:-1] + theta[-1], -_LOGIT_LIMIT, _LOGIT_LIMIT)


def out_of_fold(states: npt.ArrayLike, good: Sequence[bool], l2: float, folds: int = 5) -> np.ndarray:
    """Each row's probe logit from a probe fitted without it: what the score's fit must learn
    from (a probe's logits on its own training rows are far surer than on new answers)."""
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
    """The penalty whose out-of-fold logits give the lowest log-loss."""
    y = np.asarray(good, dtype=np.float64)
    best, best_loss = grid[-1], np.inf
    for l2 in grid:
        p = 1.0 / (1.0 + np.exp(-out_of_fold(states, good, l2)))
        loss = -np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))
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
