"""How sure the local model is of its answer: features from its token log-probabilities, a
streaming monitor that can stop a doomed draft early, and a calibrated score with its threshold.

The score is a small logistic regression whose weights bench/router.py fits on the eval set and
ships as confidence_weights.json beside this module. A refusal is a hard gate, not a feature.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.api import HiddenStates, TokenEvent
from offload.probe import PROBE_STATES, HiddenProbe, state_vector

WEIGHTS_PATH = Path(__file__).with_name("confidence_weights.json")
FINAL_SPAN = 8
"""Tokens at the end of an answer whose confidence is scored on its own (where it trails off)."""

_Z_LIMIT = 4.0
SAMPLE_FEATURES = ("sample_agreement", "sample_overlap")
"""How far extra sampled answers to the same prompt agree with the answer (offload.consistency)."""
_NEUTRAL_WHEN_MISSING = frozenset(PROBE_STATES) | frozenset(SAMPLE_FEATURES)
GUESSING_MEAN_LOGPROB = -2.0
"""An answer whose tokens average below this logprob (a geometric-mean token probability under
14%) is guesswork whatever the fit says: the fit saw the embedded model, which is rarely unsure,
so it cannot have learned what unsure looks like. Its confidence is capped at that probability."""

EARLY_SPAN = 8
"""Tokens at the start of an answer: on a short answer, where the model commits to it."""
LOW_TOKEN = math.log(0.5)
"""A token the model gave less than even odds."""
GUESS_LOGPROB = -4.0
"""A token below this logprob (probability under 2%) is a guess, not a token the model knows."""
GUESS_RUN = 6
"""Guesses in a row that stop a streaming draft: one or two are normal (a rare word, a name); a
run this long means the model has lost the answer, and every further token is wasted time."""

FEATURE_NAMES = (
    "mean_logprob", "min_logprob", "p5_logprob", "p10_logprob", "p25_logprob", "median_logprob",
    "lowest3_logprob", "first_logprob", "early_min_logprob", "min_position", "low_share",
    "mean_entropy", "max_entropy", "mean_margin", "min_margin",
    "final_mean_logprob", "final_min_logprob", "log_answer_tokens", "log_prompt_tokens",
    "digit_share", "repeat_share", "truncated", "prompt_numbers",
)
"""Every feature is computed from the token events alone (their logprob and top alternatives),
the answer's text, its prompt's text and whether it ran out of tokens, so the same names mean the
same thing on any model; only their weights are per model (a small model that cannot count
learns that numbers in the prompt or the answer are a bad sign; a bigger one need not)."""
SCORED_FEATURES = (
    "mean_logprob", "min_logprob", "final_min_logprob", "min_margin", "max_entropy",
    "log_answer_tokens",
)
"""What the score uses: on the embedded model the logprob quantiles add nothing and, being nearly
collinear, get weights of opposite signs that misjudge answers unlike any it was fitted on."""
MONOTONE_SIGNS = {
    "mean_logprob": 1, "min_logprob": 1, "final_min_logprob": 1, "min_margin": 1, "max_entropy": -1,
    "p5_logprob": 1, "p10_logprob": 1, "p25_logprob": 1, "median_logprob": 1, "lowest3_logprob": 1,
    "first_logprob": 1, "early_min_logprob": 1, "final_mean_logprob": 1, "mean_margin": 1,
    "mean_entropy": -1, "low_share": -1, "repeat_share": -1,
    "probe_prompt": 1, "probe_answer": 1, "probe_both": 1, "sample_agreement": 1, "sample_overlap": 1,
}
"""The direction each feature may push the score: a surer token never lowers it. On a model that
is confidently wrong more often than unsure, a free fit learns the opposite, and would then call
an answer made of wild guesses confident."""


def _normalise(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").split()).casefold()


def is_refusal(text: str, refusal: str | None) -> bool:
    """The model's own "I can't answer that here" sentence, whole or cut short by max_tokens."""
    if not refusal:
        return False
    said, sentence = _normalise(text), _normalise(refusal)
    if not said:
        return False
    return sentence in said or (len(said) >= len(sentence) // 2 and sentence.startswith(said))


def _entropy_and_margin(event: TokenEvent) -> tuple[float, float]:
    """Entropy over the top alternatives plus one bucket for the rest (a lower bound on the
    true entropy), and the gap between the two likeliest tokens."""
    if not event.top:
        return -event.logprob, 0.0
    probs = [math.exp(alt.logprob) for alt in event.top]
    rest = max(0.0, 1.0 - sum(probs))
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    if rest > 1e-12:
        entropy -= rest * math.log(rest)
    ranked = sorted((alt.logprob for alt in event.top), reverse=True)
    margin = ranked[0] - ranked[1] if len(ranked) > 1 else -math.log(max(rest, 1e-12)) + ranked[0]
    return entropy, margin


def _text_features(answer: str, prompt: str, truncated: bool) -> dict[str, float]:
    words = answer.split()
    return {
        "digit_share": sum(c.isdigit() for c in answer) / max(len(answer), 1),
        # A small model that has lost the thread repeats itself.
        "repeat_share": 1.0 - len(set(words)) / len(words) if words else 0.0,
        "truncated": float(truncated),
        "prompt_numbers": math.log1p(len(_NUMBER.findall(prompt))),
    }


_NUMBER = re.compile(r"\d+")


def features(tokens: Sequence[TokenEvent], prompt_tokens: int = 0, *, prompt: str = "",
             truncated: bool = False) -> dict[str, float]:
    """The score's inputs, over the whole answer and its final span; `prompt` is the question's
    text and `truncated` says the answer ran out of tokens (max_tokens) rather than ending."""
    text = _text_features("".join(t.text for t in tokens), prompt, truncated)
    if not tokens:
        empty = dict.fromkeys(FEATURE_NAMES, 0.0)
        for name in FEATURE_NAMES:
            if name.endswith("_logprob"):
                empty[name] = -20.0
        empty["low_share"] = 1.0
        empty["log_prompt_tokens"] = math.log1p(prompt_tokens)
        return {**empty, **text}
    logprobs = np.array([t.logprob for t in tokens], dtype=np.float64)
    entropy, margin = np.array([_entropy_and_margin(t) for t in tokens], dtype=np.float64).T
    final = logprobs[-FINAL_SPAN:]
    lowest = np.sort(logprobs)[:3]
    return {
        "mean_logprob": float(logprobs.mean()),
        "min_logprob": float(logprobs.min()),
        "p5_logprob": float(np.quantile(logprobs, 0.05)),
        "p10_logprob": float(np.quantile(logprobs, 0.10)),
        "p25_logprob": float(np.quantile(logprobs, 0.25)),
        "median_logprob": float(np.median(logprobs)),
        "lowest3_logprob": float(lowest.mean()),
        "first_logprob": float(logprobs[0]),
        "early_min_logprob": float(logprobs[:EARLY_SPAN].min()),
        # Where the least likely token sits, 0 (first) to 1 (last): a guess at the start is the
        # answer itself; one at the end is often only how the sentence trails off.
        "min_position": float(np.argmin(logprobs) / max(len(logprobs) - 1, 1)),
        "low_share": float((logprobs < LOW_TOKEN).mean()),
        "mean_entropy": float(entropy.mean()),
        "max_entropy": float(entropy.max()),
        "mean_margin": float(margin.mean()),
        "min_margin": float(margin.min()),
        "final_mean_logprob": float(final.mean()),
        "final_min_logprob": float(final.min()),
        "log_answer_tokens": math.log1p(len(tokens)),
        "log_prompt_tokens": math.log1p(prompt_tokens),
        **text,
    }


@dataclass(frozen=True)
class Calibration:
    """A logistic regression from standardised features to P(the local answer is good)."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    reference: tuple[float, ...] = ()
    """Scores of the eval set at quantiles 0, 0.01, ..., 1: maps a target escalation rate to a cutoff."""
    fitted_on: str = ""
    probes: tuple[HiddenProbe, ...] = ()
    """Probes on the model's hidden state whose logits are features (probe_prompt, probe_answer)."""

    def score(self, values: Mapping[str, float]) -> float:
        # A probe feature without a hidden state (a backend that does not export it), or a sample
        # feature where no extra answers were drawn, is neutral.
        x = np.array([values.get(name, m if name in _NEUTRAL_WHEN_MISSING else 0.0) for name, m in zip(self.names, self.mean)],
                     dtype=np.float64)
        # Clipped: an answer far outside what the fit saw must not ride a linear extrapolation.
        z = np.clip((x - np.array(self.mean)) / np.array(self.scale), -_Z_LIMIT, _Z_LIMIT)
        return float(_sigmoid(z @ np.array(self.weights) + self.bias))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        values = _tupled({k: v for k, v in data.items() if k != "probes"})
        probes = tuple(HiddenProbe(**_tupled(probe)) for probe in data.get("probes", ()))
        return cls(**values, probes=probes)

    @classmethod
    def load(cls, path: Path = WEIGHTS_PATH) -> Calibration:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _tupled(data: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON object's lists as tuples (the frozen dataclasses hold tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def probe_features(calibration: Calibration, hidden: HiddenStates | None) -> dict[str, float]:
    """The calibration's probe logits on this answer's hidden states (none without them)."""
    if hidden is None:
        return {}
    values = {}
    for probe in calibration.probes:
        try:
            values[probe.feature] = probe.logit(state_vector(hidden, probe.state))
        except (ValueError, AttributeError):  # another width (another model) or an unknown state
            continue
    return values


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def fit_calibration(
    rows: Sequence[Mapping[str, float]], good: Sequence[bool], names: Sequence[str] = SCORED_FEATURES,
    l2: float = 1.0, fitted_on: str = "",
) -> Calibration:
    """An L2-regularised logistic regression whose weights respect MONOTONE_SIGNS: a feature the
    fit wants the wrong way round is dropped (weight 0), the worst first, and the rest refitted."""
    x = np.array([[row.get(n, 0.0) for n in names] for row in rows], dtype=np.float64)
    y = np.array(good, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    signs = np.array([MONOTONE_SIGNS.get(n, 0) for n in names], dtype=np.float64)
    used = np.ones(len(names), dtype=bool)
    while True:
        theta = _newton_fit(z * used, y, l2)
        wrong = np.where(signs * theta[:-1] < 0, -signs * theta[:-1], 0.0)
        if not wrong.any():
            break
        used[int(np.argmax(wrong))] = False
    weights = np.where(used, theta[:-1], 0.0)
    partial = Calibration(tuple(names), _floats(mean), _floats(scale), _floats(weights), float(theta[-1]))
    scores = np.array([partial.score(row) for row in rows])
    reference = tuple(float(q) for q in np.quantile(scores, np.linspace(0, 1, 101)))
    return Calibration(partial.names, partial.mean, partial.scale, partial.weights, partial.bias,
                       reference, fitted_on)


def _newton_fit(z: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Newton's method on the L2-regularised log-loss; the last weight is the (unshrunk) bias."""
    z = np.hstack([z, np.ones((len(z), 1))])
    theta = np.zeros(z.shape[1])
    penalty = np.eye(z.shape[1]) * l2
    penalty[-1, -1] = 0.0
    for _ in range(50):
        p = np.asarray(_sigmoid(z @ theta))
        gradient = z.T @ (p - y) + penalty @ theta
        hessian = (z * (p * (1 - p))[:, None]).T @ z + penalty + np.eye(len(theta)) * 1e-9
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class AbortRule:
    """Early abort from calibrated signals: when the draft reaches a checkpoint (tokens so far),
    a score of that prefix (and of the probe on the prompt's states, where the calibration has
    one: the model's own sense, before it answers, of whether it knows) below `cutoff` stops it.
    Fitted on prefixes of that length, so the cutoff only fires where a prefix that low was
    almost always a wrong answer."""

    checkpoints: tuple[int, ...]
    calibration: Calibration
    cutoff: float


@dataclass
class StreamMonitor:
    """Watches local tokens as they stream and says when to stop: the refusal has begun, or the
    model has been guessing for a run of tokens. Only consulted when escalation is possible."""

    refusal: str | None
    low_logprob: float = GUESS_LOGPROB
    low_run: int = GUESS_RUN
    refusal_prefix_chars: int = 7
    """Enough of the refusal to tell it from an answer ("I can't" vs the model's "I can help")."""
    abort: AbortRule | None = None
    """The model's calibrated early-abort rule, where its calibration has one."""
    prompt: str = ""
    """The question, for the abort rule's prompt features."""
    _text: str = field(default="", init=False)
    _run: int = field(default=0, init=False)
    _tokens: list[TokenEvent] = field(default_factory=list, init=False)
    _probes: dict[str, float] = field(default_factory=dict, init=False)
    """The abort rule's probe on the prompt's states, read from the answer's first event."""

    def observe(self, event: TokenEvent) -> str | None:
        """The reason to abort now, or None to go on."""
        if self.abort is not None and event.prompt_hidden is not None:
            self._probes = probe_features(self.abort.calibration, event.prompt_hidden)
        self._text += event.text
        self._run = self._run + 1 if event.logprob < self.low_logprob else 0
        said = _normalise(self._text)
        if self.refusal and len(said) >= self.refusal_prefix_chars:
            if _normalise(self.refusal).startswith(said) or is_refusal(said, self.refusal):
                return "the local model says this needs a bigger model"
        if self._run >= self.low_run:
            return f"the local model was guessing ({self._run} tokens in a row below p={math.exp(self.low_logprob):.2f})"
        self._tokens.append(event)
        if self.abort is not None and len(self._tokens) in self.abort.checkpoints:
            score = self.abort.calibration.score({**features(self._tokens, prompt=self.prompt), **self._probes})
            if score < self.abort.cutoff:
                count = len(self._tokens)
                tokens = "token" if count == 1 else "tokens"
                return f"the local draft looks wrong (confidence {score:.2f} after {count} {tokens})"
        return None


@dataclass(frozen=True)
class EscalationThreshold:
    """When a kept answer is too risky: either a risk level (escalate when the estimated chance
    the local answer is wrong exceeds it) or a target share of turns to escalate."""

    risk: float = 0.5
    target_rate: float | None = None

    def cutoff(self, calibration: Calibration) -> float:
        """Escalate when the confidence score is below this."""
        if self.target_rate is not None and calibration.reference:
            reference = np.array(calibration.reference)
            return float(np.interp(self.target_rate, np.linspace(0, 1, len(reference)), reference))
        return 1.0 - self.risk


@dataclass(frozen=True)
class Assessment:
    confidence: float
    refused: bool
    features: dict[str, float]


def assess(
    tokens: Sequence[TokenEvent], refusal: str | None, calibration: Calibration,
    prompt_tokens: int = 0, *, prompt: str = "", truncated: bool = False, hidden: HiddenStates | None = None,
) -> Assessment:
    """The calibrated confidence of a finished (or aborted) local answer; `hidden` (the engine's
    hidden states, where it exports them) feeds the calibration's probes."""
    text = "".join(t.text for t in tokens)
    values = features(tokens, prompt_tokens, prompt=prompt, truncated=truncated)
    values.update(probe_features(calibration, hidden))
    refused = is_refusal(text, refusal)
    values["refusal"] = float(refused)
    return Assessment(answer_confidence(values, refused, calibration), refused, values)


def answer_confidence(values: Mapping[str, float], refused: bool, calibration: Calibration) -> float:
    """The calibrated score behind two hard rules: a refusal is 0, guesswork is capped."""
    if refused:
        return 0.0
    score = calibration.score(values)
    mean = values.get("mean_logprob", 0.0)
    return min(score, math.exp(mean)) if mean < GUESSING_MEAN_LOGPROB else score
