"""Fits a local model's own calibration: runs graded prompts through it (with the sampling settings
the router uses), fits probes on its hidden states and the confidence score over them and the
token-probability signals (monotone logistic regression), picks the threshold and the early-abort
rule on the calibrate half, and measures all three on the held-out half.

Engine-agnostic and store-agnostic: callers hand in prompts with a grader, and extra labelled
feature rows (the user's feedback) when refitting from history.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.api import Engine, FinishEvent, GenerationRequest, HiddenStates, TokenEvent
from offload import probe as probing
from offload.consistency import (
    SAMPLE_FEATURES,
    SAMPLE_TEMPERATURE,
    consistency_features,
    could_flip,
    draw_samples,
)
from offload.calibrations import ModelCalibration, ModelIdentity
from offload.confidence import (
    AbortRule,
    Calibration,
    StreamMonitor,
    answer_confidence,
    features,
    fit_calibration,
    is_refusal,
    probe_features,
)

PORTABLE_FEATURES = (
    "mean_logprob", "p5_logprob", "p10_logprob", "p25_logprob", "median_logprob", "lowest3_logprob",
    "first_logprob", "early_min_logprob", "min_position", "low_share", "mean_entropy", "mean_margin",
    "min_margin", "final_mean_logprob", "log_answer_tokens", "log_prompt_tokens",
    "digit_share", "repeat_share", "truncated", "prompt_numbers",
)
"""What a model's own fit may use: token logprobs and their alternatives, the answer's and the
prompt's text, and whether the answer ran out of tokens."""
ABORT_CHECKPOINTS = (1, 4, 8, 16)
"""Tokens after which the stream monitor scores a draft. The first token brings the states at the
prompt's end, so the probe on the middle one can stop a question the model does not know there."""
ABORT_PRECISION = 0.9
"""An abort cutoff fires only where, on the calibrate half, at least this share of the prefixes
scoring below it belonged to wrong answers: a right answer is rarely cut short."""
SCORE_L2_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
"""Penalties tried for the score's fit over the signals and probes (standardised); the one with the
best cross-validated log-loss on the calibrate half wins. With probes, many signals say the same
thing, and a strong penalty spreads the weight over them (on SmolLM2-135M: 30 to 100)."""
MIN_EACH = 3
"""Right and wrong answers each needed, at least, before a fit means anything."""
MAX_TOKENS = 32
"""Tokens per calibration answer: short answers are decided in their first tokens."""
KEEP_CORRECT = 0.92
"""The threshold keeps at least this share of right answers local on the calibrate half (the
issue's target is 90% on new prompts; the margin covers the held-out half's spread), and, within
that, escalates as many wrong ones as it can."""
ABORT_RIGHT_SHARE = round(1 - KEEP_CORRECT, 2)
"""An abort cutoff also stops at most this share of the right answers: the threshold's whole
budget for them, so that a draft the model will get wrong stops at a checkpoint rather than at
its end. On a model that is mostly wrong (SmolLM2-135M gets 3 in 10 right), 90% precision alone cut short
17% of its right answers. Measured on SmolLM2's held-out half with the probe on the prompt's
middle state in the rule: a share of 0.06 kept 90% of right answers, escalated 51% of wrong ones
and saved 48% of their decode; 0.08: 93%, 52%, 66%; 0.10: 92%, 53%, 72%."""


class CalibrationFailed(Exception):
    """The prompts cannot support a fit (e.g. the model got none right); the message says why."""


@dataclass(frozen=True)
class Prompt:
    """One graded prompt: `grade(answer)` says whether the answer is right."""

    text: str
    grade: Callable[[str], bool]
    kind: str = ""


@dataclass
class Run:
    """A prompt's answer with everything the router would see of it."""

    answer: str
    tokens: list[TokenEvent]
    prompt_tokens: int
    correct: bool
    refused: bool
    decode_s: float
    kind: str = ""
    prompt: str = ""
    truncated: bool = False
    """It ran out of tokens rather than ending."""
    hidden: HiddenStates | None = None
    """The model's hidden states for this answer (engine.api.HiddenStates), where exported."""
    samples: tuple[str, ...] = ()
    """Extra answers drawn to the same prompt (offload.consistency), where drawn."""

    @property
    def features(self) -> dict[str, float]:
        """The token, text and sample-consistency signals (the probes' logits come from a fit: see
        `scored`)."""
        return {**features(self.tokens, self.prompt_tokens, prompt=self.prompt, truncated=self.truncated),
                **consistency_features(self.answer, self.samples, self.prompt)}

    def scored(self, calibration: Calibration) -> dict[str, float]:
        """What the router would score: the signals plus the calibration's probe logits."""
        return {**self.features, **probe_features(calibration, self.hidden)}


Progress = Callable[[int, int], None]
"""(done, total) after each prompt."""


def run_prompts(engine: Engine, prompts: Sequence[Prompt], *, max_tokens: int = MAX_TOKENS,
                progress: Progress | None = None, sampling: Mapping[str, Any] | None = None) -> list[Run]:
    """Each prompt as a one-message conversation, sampled as the router samples it: with the
    model's own generation settings, or the user's `sampling` override of them (the router's
    GenerationRequest fields). The answers whose confidence the router judges are these."""
    refusal = engine.info.refusal
    runs = []
    for n, prompt in enumerate(prompts, start=1):
        request = GenerationRequest(messages=[{"role": "user", "content": prompt.text}], max_tokens=max_tokens,
                                    seed=n, **dict(sampling or {}))
        tokens: list[TokenEvent] = []
        prompt_tokens, truncated, hidden = 0, False, None
        first = time.perf_counter()
        for event in engine.generate(request):
            if isinstance(event, FinishEvent):
                prompt_tokens, truncated = event.usage.prompt_tokens, event.reason == "length"
                hidden = event.hidden
                continue
            if not tokens:
                first = time.perf_counter()  # decode time from the first token: prefill is paid either way
            tokens.append(event)
        decode_s = time.perf_counter() - first if tokens else 0.0
        answer = "".join(t.text for t in tokens)
        refused = is_refusal(answer, refusal)
        runs.append(Run(answer, tokens, prompt_tokens, not refused and prompt.grade(answer), refused, decode_s,
                        prompt.kind, prompt.text, truncated, hidden))
        if progress is not None:
            progress(n, len(prompts))
    return runs


def add_samples(engine: Engine, runs: Sequence[Run], n: int, *, temperature: float | None = SAMPLE_TEMPERATURE,
                progress: Progress | None = None, sampling: Mapping[str, Any] | None = None) -> None:
    """Tops each run's `samples` up to `n` extra answers to its prompt (refusals too: a refusal is
    gated before the score, but the router cannot know it will be one before it is)."""
    for k, run in enumerate(runs, start=1):
        have = len(run.samples)
        run.samples = run.samples[:n] + tuple(draw_samples(
            engine, [{"role": "user", "content": run.prompt}], max(n - have, 0), seed=k, skip=have,
            temperature=temperature, sampling=sampling))
        if progress is not None:
            progress(k, len(runs))


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """P(a random positive outranks a random negative), ties half; NaN without both classes."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit_rows(rows: Sequence[Mapping[str, float]], good: Sequence[bool], fitted_on: str,
             names: Sequence[str] = PORTABLE_FEATURES, l2: float = 1.0) -> Calibration:
    right = sum(good)
    if min(right, len(good) - right) < MIN_EACH:
        raise CalibrationFailed(
            f"of {len(good)} answers it could score (refusals aside), {right} were right and {len(good) - right} "
            f"wrong; a fit needs at least {MIN_EACH} of each. Use more prompts (a larger --limit, or none).")
    return fit_calibration(rows, good, names=names, fitted_on=fitted_on, l2=l2)


def choose_score_l2(rows: Sequence[Mapping[str, float]], good: Sequence[bool], names: Sequence[str],
                    grid: Sequence[float] = SCORE_L2_GRID) -> float:
    """The penalty whose cross-validated scores have the lowest log-loss."""
    y = np.asarray(good, dtype=np.float64)
    best, best_loss = 1.0, np.inf
    for l2 in grid:
        p = np.clip(cross_validated(rows, good, names=names, l2=l2), 1e-6, 1 - 1e-6)
        loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        if loss < best_loss:
            best, best_loss = l2, loss
    return best


def cross_validated(rows: Sequence[Mapping[str, float]], good: Sequence[bool], folds: int = 5,
                    names: Sequence[str] = PORTABLE_FEATURES, l2: float = 1.0) -> list[float]:
    """Each row scored by a fit that did not see it (for choosing the threshold honestly)."""
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    scores = [0.5] * len(rows)
    for fold in range(folds):
        held = set(order[fold::folds])
        train = [i for i in order if i not in held]
        if len({good[i] for i in train}) < 2:
            continue
        calibration = fit_calibration([rows[i] for i in train], [good[i] for i in train], names=names, l2=l2)
        for i in held:  # as the router scores it, guesswork capped
            scores[i] = answer_confidence(rows[i], False, calibration)
    return scores


def best_cutoff(scores: Sequence[float], good: Sequence[bool]) -> float:
    """The cutoff that maximises (share of right answers kept) + (share of wrong ones escalated)."""
    s, y = np.asarray(scores), np.asarray(good, dtype=bool)
    candidates = np.unique(np.concatenate([s, [0.0, 1.0]]))
    best, best_j = 0.5, -1.0
    for c in candidates:
        kept = (s[y] >= c).mean() if y.any() else 0.0
        escalated = (s[~y] < c).mean() if (~y).any() else 0.0
        if kept + escalated > best_j:
            best, best_j = float(c), kept + escalated
    return best


def target_cutoff(scores: Sequence[float], good: Sequence[bool], keep: float = KEEP_CORRECT,
                  escalated_anyway: Sequence[bool] | None = None) -> float:
    """The highest cutoff that still keeps `keep` of the right answers local (counting those the
    early abort escalates whatever their score): the most wrong answers escalated at that cost."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(good, dtype=bool)
    forced = np.zeros(len(s), dtype=bool) if escalated_anyway is None else np.asarray(escalated_anyway, dtype=bool)
    if not y.any():
        return best_cutoff(scores, good)
    candidates = np.unique(np.concatenate([s, [0.0]]))
    best = float(candidates[0])
    for c in candidates:
        if ((s[y] >= c) & ~forced[y]).mean() >= keep:
            best = max(best, float(c))
    return best


def fit_abort(runs: Sequence[Run], checkpoints: Sequence[int] = ABORT_CHECKPOINTS,
              prompt_probe: probing.HiddenProbe | None = None, probe_logits: Sequence[float] = ()) -> AbortRule | None:
    """A prefix score fitted on the first k tokens of each answer (with `prompt_probe`, also on
    its logit for each run's prompt: `probe_logits`, out of fold), and the highest cutoff whose
    aborts were (on these runs) almost all wrong answers; None if no cutoff is that safe."""
    rows, good, owner = [], [], []
    for n, run in enumerate(runs):
        for k in checkpoints:
            if len(run.tokens) > k:
                prefix = features(run.tokens[:k], prompt=run.prompt)
                rows.append(prefix if prompt_probe is None else {**prefix, prompt_probe.feature: probe_logits[n]})
                good.append(run.correct)
                owner.append(n)
    if len(set(good)) < 2 or len(rows) < 20:
        return None
    # A prefix has no length of its own yet, nor an ending; the prompt's size the monitor does not see.
    names = tuple(n for n in PORTABLE_FEATURES if n not in ("log_answer_tokens", "truncated", "log_prompt_tokens"))
    if prompt_probe is not None:
        names = (*names, prompt_probe.feature)
    calibration = fit_calibration(rows, good, names=names, fitted_on=f"{len(rows)} prefixes")
    if prompt_probe is not None:
        calibration = replace(calibration, probes=(prompt_probe,))
    scores = np.array([calibration.score(r) for r in rows])
    wrong = ~np.asarray(good, dtype=bool)
    # A run is stopped at its lowest-scoring checkpoint prefix, if that is below the cutoff.
    lowest = np.full(len(runs), np.inf)
    np.minimum.at(lowest, np.asarray(owner), scores)
    right = np.array([run.correct for run in runs], dtype=bool)
    cutoff = None
    for c in np.unique(scores):
        below = scores < c
        stopped_right = (lowest[right] < c).mean() if right.any() else 0.0
        if below.sum() >= 5 and wrong[below].mean() >= ABORT_PRECISION and stopped_right <= ABORT_RIGHT_SHARE:
            cutoff = float(c)
    return None if cutoff is None else AbortRule(tuple(checkpoints), calibration, cutoff)


@dataclass(frozen=True)
class HeldOutReport:
    n: int
    accuracy: float
    auroc: float
    kept_local_correct: float
    escalated_wrong: float
    early_abort_saved: float
    sampled_share: float = 0.0
    """Answers whose route the sample draws could flip, so the router would draw them."""


def evaluate(stored: ModelCalibration, runs: Sequence[Run], refusal: str | None = None) -> HeldOutReport:
    """The stored fit on runs it never saw, as the router would use it: a turn escalates when the
    stream monitor stops its draft or its finished answer scores below the cutoff."""
    scores = [answer_confidence(r.scored(stored.calibration), r.refused, stored.calibration) for r in runs]
    good = [r.correct for r in runs]
    stops = [abort_point(stored.abort, r, refusal) for r in runs]
    escalate = [stop is not None or s < stored.cutoff for s, stop in zip(scores, stops)]
    right = [i for i, g in enumerate(good) if g]
    wrong = [i for i, g in enumerate(good) if not g]
    sampled = [stop is None and not r.refused and could_flip({k: v for k, v in r.scored(stored.calibration).items()
                                                             if k not in SAMPLE_FEATURES},
                                                            stored.calibration, stored.cutoff)
               for r, stop in zip(runs, stops)]
    total = sum(r.decode_s for r, e in zip(runs, escalate) if e and r.tokens)
    saved = sum(r.decode_s * (1 - stop / len(r.tokens)) for r, e, stop in zip(runs, escalate, stops)
                if e and r.tokens and stop is not None)
    return HeldOutReport(
        n=len(runs),
        accuracy=len(right) / len(runs) if runs else float("nan"),
        auroc=auroc(scores, good),
        kept_local_correct=sum(not escalate[i] for i in right) / len(right) if right else float("nan"),
        escalated_wrong=sum(escalate[i] for i in wrong) / len(wrong) if wrong else float("nan"),
        early_abort_saved=saved / total if total else 0.0,
        sampled_share=sum(sampled) / len(runs) if runs else 0.0,
    )


def abort_point(rule: AbortRule | None, run: Run, refusal: str | None) -> int | None:
    """After how many tokens the stream monitor stops this run's draft, or None."""
    monitor = StreamMonitor(refusal, abort=rule, prompt=run.prompt)
    for n, token in enumerate(run.tokens, start=1):
        if monitor.observe(token):
            return n
    return None


def calibrate(
    identity: ModelIdentity, fit_runs: Sequence[Run], heldout_runs: Sequence[Run],
    extra: Sequence[tuple[Mapping[str, float], bool]] = (), refusal: str | None = None, created: str = "",
    sample_temperature: float | None = SAMPLE_TEMPERATURE,
) -> tuple[ModelCalibration, HeldOutReport | None]:
    """The model's calibration from its calibrate-half runs (plus `extra` labelled feature rows
    from the user's feedback), and its report on the held-out runs. Where the runs carry sample
    draws (`add_samples`, at `sample_temperature`), their agreement joins the score."""
    kept = [r for r in fit_runs if not r.refused]  # a refusal is gated before the score
    rows = [r.features for r in kept] + _neutral_samples([dict(f) for f, _ in extra], kept)
    good = [r.correct for r in kept] + [bool(g) for _, g in extra]
    source = f"{len(kept)} calibrate prompts" + (f" + {len(extra)} feedback labels" if extra else "")
    probes = fit_probes(kept, rows, good)
    sampled = SAMPLE_FEATURES if kept and all(r.samples for r in kept) else ()
    names = (*PORTABLE_FEATURES, *sampled, *(p.feature for p in probes))
    fit_rows(rows, good, fitted_on=source, names=names)  # enough of each kind, or CalibrationFailed
    l2 = choose_score_l2(rows, good, names)
    calibration = replace(fit_rows(rows, good, fitted_on=f"{source}, l2 {l2:g}", names=names, l2=l2), probes=probes)
    prompt_probe = next((p for p in probes if p.feature == "probe_prompt"), None)
    abort = fit_abort(kept, prompt_probe=prompt_probe, probe_logits=[row.get("probe_prompt", 0.0) for row in rows])
    aborted = [abort_point(abort, r, refusal) is not None for r in kept] + [False] * len(extra)
    cutoff = target_cutoff(cross_validated(rows, good, names=names, l2=l2), good, escalated_anyway=aborted)
    draws = len(kept[0].samples) if sampled else 0
    stored = ModelCalibration(identity, calibration, cutoff, n_fit=len(rows), history_labels=len(extra),
                              abort=abort, created=created, samples=draws,
                              sample_temperature=sample_temperature if draws else None)
    if not heldout_runs:
        return stored, None
    report = evaluate(stored, heldout_runs, refusal)
    stored = replace(stored, heldout_auroc=_finite(report.auroc), heldout_accuracy=report.accuracy,
                     n_heldout=report.n)
    return stored, report


def _neutral_samples(rows: list[dict[str, float]], kept: Sequence[Run]) -> list[dict[str, float]]:
    """Feedback rows recorded without sample draws (the router draws them only near the cutoff)
    get the calibrate half's mean agreement: neutral, rather than the 0 that would read as
    "every draw disagreed"."""
    drawn = [r.features for r in kept if r.samples]
    if not drawn:
        return rows
    means = {name: float(np.mean([f[name] for f in drawn])) for name in SAMPLE_FEATURES}
    return [{**means, **row} for row in rows]


def fit_probes(kept: Sequence[Run], rows: list[dict[str, float]], good: Sequence[bool]) -> tuple[probing.HiddenProbe, ...]:
    """Probes on the runs' hidden states (none where the backend does not export them). Each
    calibrate row gets its probe logit from a probe fitted without it (written into `rows`), so
    the score learns how far to trust a probe on answers it has not seen; rows past the runs
    (feedback labels) keep the logit the router recorded, or none."""
    if not kept or not all(probing.has_states(r.hidden) for r in kept):
        return ()
    labels = list(good[: len(kept)])
    if min(sum(labels), len(labels) - sum(labels)) < MIN_EACH:
        return ()
    probes = []
    for feature, state in probing.PROBE_STATES.items():
        states = [probing.state_vector(r.hidden, state) for r in kept]
        l2 = probing.choose_l2(states, labels)
        for row, logit in zip(rows, probing.out_of_fold(states, labels, l2)):
            row[feature] = float(logit)
        probes.append(probing.fit_probe(feature, states, labels, l2))
    return tuple(probes)


def _finite(value: float) -> float | None:
    return None if value != value else round(value, 4)
