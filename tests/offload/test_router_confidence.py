"""Confidence: features from token logprobs, the refusal gate, the streaming monitor that stops
a doomed draft, and the calibration with its two kinds of threshold."""

from __future__ import annotations

import math
import random

import pytest

from engine.api import Alternative, TokenEvent
from offload.confidence import (
    Calibration,
    EscalationThreshold,
    StreamMonitor,
    assess,
    features,
    MONOTONE_SIGNS,
    fit_calibration,
    is_refusal,
)

REFUSAL = "I can't answer that here: it needs a bigger model."


def token(text: str, logprob: float, *alternatives: float) -> TokenEvent:
    top = (Alternative(1, text, logprob),) + tuple(Alternative(2 + i, "x", lp) for i, lp in enumerate(alternatives))
    return TokenEvent(text, 1, logprob, top)


def test_features_cover_whole_answer_and_final_span() -> None:
    tokens = [token("a", -0.1, -3.0)] * 10 + [token("b", -2.0, -2.5)] * 2
    values = features(tokens, prompt_tokens=20)
    assert values["min_logprob"] == -2.0
    assert values["mean_logprob"] == pytest.approx((10 * -0.1 + 2 * -2.0) / 12)
    assert values["final_mean_logprob"] == pytest.approx((6 * -0.1 + 2 * -2.0) / 8)
    assert values["min_margin"] == pytest.approx(0.5)
    assert values["log_answer_tokens"] == pytest.approx(math.log1p(12))
    assert values["log_prompt_tokens"] == pytest.approx(math.log1p(20))


def test_entropy_counts_the_mass_outside_the_top_alternatives() -> None:
    sure = features([token("a", math.log(0.99), math.log(0.01))])
    torn = features([token("a", math.log(0.3), math.log(0.3), math.log(0.2))])
    assert sure["mean_entropy"] < 0.1
    expected = -(2 * 0.3 * math.log(0.3) + 0.2 * math.log(0.2) + 0.2 * math.log(0.2))
    assert torn["mean_entropy"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        (REFUSAL, True),
        ("  i can\u2019t answer that here:  it needs a bigger model.", True),
        ("I can't answer that here: it needs", True),  # cut short by max_tokens
        ("I can't", False),
        ("Press Ctrl+Q to quit.", False),
    ],
)
def test_refusal_is_recognised_whole_or_cut_short(text: str, refused: bool) -> None:
    assert is_refusal(text, REFUSAL) is refused


def feed(monitor: StreamMonitor, pieces: list[tuple[str, float]]) -> tuple[int, str | None]:
    for count, (text, logprob) in enumerate(pieces, start=1):
        reason = monitor.observe(token(text, logprob))
        if reason:
            return count, reason
    return len(pieces), None


def test_monitor_stops_at_the_refusals_first_tokens() -> None:
    pieces = [(w, -0.01) for w in ["I", " can't", " answer", " that", " here", ":", " it", " needs"]]
    count, reason = feed(StreamMonitor(REFUSAL), pieces)
    assert reason is not None and "bigger model" in reason
    assert count == 2


def test_monitor_stops_on_a_run_of_guesses_but_not_on_one() -> None:
    one_slip = [("ok", -0.1)] * 5 + [("?", -9.0)] + [("ok", -0.1)] * 20
    assert feed(StreamMonitor(REFUSAL), one_slip) == (26, None)
    guessing = [("ok", -0.1)] * 3 + [("?", -6.0)] * 10
    count, reason = feed(StreamMonitor(REFUSAL, low_run=6), guessing)
    assert count == 9 and "guessing" in reason


def test_an_answer_that_starts_like_the_refusal_but_differs_goes_on() -> None:
    pieces = [(w, -0.01) for w in ["I", " can", " help", " with", " Tandem", " itself", "."]]
    assert feed(StreamMonitor(REFUSAL), pieces)[1] is None


def synthetic_rows(seed: int, n: int) -> tuple[list[dict[str, float]], list[bool]]:
    rng = random.Random(seed)
    rows, good = [], []
    for _ in range(n):
        ok = rng.random() < 0.5
        centre = -0.2 if ok else -1.5
        tokens = [token("t", min(0.0, rng.gauss(centre, 0.5)), -4.0) for _ in range(rng.randint(3, 30))]
        rows.append(features(tokens))
        good.append(ok)
    return rows, good


def test_fitted_calibration_separates_and_round_trips(tmp_path) -> None:
    rows, good = synthetic_rows(0, 300)
    calibration = fit_calibration(rows, good, fitted_on="synthetic")
    test_rows, test_good = synthetic_rows(1, 200)
    scores = [calibration.score(r) for r in test_rows]
    correct = sum((s >= 0.5) == g for s, g in zip(scores, test_good))
    assert correct / len(test_good) > 0.9
    path = tmp_path / "weights.json"
    path.write_text(calibration.to_json())
    assert Calibration.load(path).score(test_rows[0]) == pytest.approx(scores[0])


def test_a_fit_on_a_confidently_wrong_model_never_rewards_guessing() -> None:
    # Wrong answers here are surer than right ones: a free fit would learn "low logprob = good".
    rng = random.Random(3)
    rows, good = [], []
    for _ in range(300):
        ok = rng.random() < 0.5
        tokens = [token("t", min(0.0, rng.gauss(-0.3 if ok else -0.05, 0.05)), -4.0) for _ in range(8)]
        rows.append(features(tokens))
        good.append(ok)
    calibration = fit_calibration(rows, good)
    weights = dict(zip(calibration.names, calibration.weights))

    assert all(weights[name] * sign >= 0 for name, sign in MONOTONE_SIGNS.items() if name in weights)
    sure = features([token("t", -0.01, -6.0) for _ in range(8)])
    guessing = features([token("t", -5.0, -5.1) for _ in range(8)])
    assert calibration.score(guessing) <= calibration.score(sure)


def test_an_answer_of_guesses_is_unsure_whatever_the_shipped_fit_says() -> None:
    guesses = [token(w, -3.0, -3.1) for w in ["Maybe", " try", " something", " else"]]
    verdict = assess(guesses, REFUSAL, Calibration.load())
    assert not verdict.refused and verdict.confidence <= math.exp(-3.0)


def test_threshold_as_target_rate_escalates_that_share() -> None:
    rows, good = synthetic_rows(2, 400)
    calibration = fit_calibration(rows, good)
    for rate in (0.1, 0.3, 0.5):
        cutoff = EscalationThreshold(target_rate=rate).cutoff(calibration)
        share = sum(calibration.score(r) < cutoff for r in rows) / len(rows)
        assert share == pytest.approx(rate, abs=0.03)
    assert EscalationThreshold(risk=0.2).cutoff(calibration) == pytest.approx(0.8)


def test_shipped_weights_load_and_refusal_is_a_hard_gate() -> None:
    calibration = Calibration.load()
    sure = [token(w, -0.01, -6.0) for w in ["Press", " Ctrl", "+Q", "."]]
    assert assess(sure, REFUSAL, calibration).confidence > 0.8
    refusal = [token(w, -0.001, -9.0) for w in (REFUSAL[:10], REFUSAL[10:])]
    verdict = assess(refusal, REFUSAL, calibration)
    assert verdict.refused and verdict.confidence == 0.0 and verdict.features["refusal"] == 1.0
