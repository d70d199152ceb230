"""The hidden-state probe and what the calibration builds on it: the probe recovers a known
direction, its feature keeps its known sign, the calibrate step fits probes on the runs' hidden
states and stores them, the router's assessment reads them from the FinishEvent's states, the
threshold keeps the targeted share of right answers, and a GGUF's calibration is keyed on its file."""

from __future__ import annotations

import numpy as np
import pytest

from conftest_router import token_events
from engine.api import EngineInfo, HiddenStates
from engine.model_facts import declared_facts, gguf_weights_id
from offload import calibrate as fitting
from offload.calibrate import Run, auroc, target_cutoff
from offload.calibrations import ModelCalibration, ModelIdentity, data_dir_path, read, resolve, save
from offload.confidence import MONOTONE_SIGNS, assess, fit_calibration
from offload.probe import choose_l2, fit_probe, out_of_fold

WIDTH = 24


def hidden_set(n: int, seed: int, direction: np.ndarray | None = None):
    """States whose projection on a known direction decides (logistically) whether the answer is right."""
    rng = np.random.default_rng(seed)
    if direction is None:
        direction = rng.standard_normal(WIDTH)
        direction /= np.linalg.norm(direction)
    x = rng.standard_normal((n, WIDTH)) * 2.0 + 0.5
    p = 1 / (1 + np.exp(-3.0 * ((x - 0.5) @ direction)))
    return x, list(rng.random(n) < p), direction


def test_the_probe_recovers_the_direction_that_decides() -> None:
    x, good, direction = hidden_set(3000, seed=0)
    probe = fit_probe("probe_prompt", x, good, l2=1.0)
    # The probe works on standardised states: map its weights back to the raw space (ridge on
    # the label points along the deciding direction for Gaussian states).
    learned = np.array(probe.weights) / np.array(probe.scale)
    cosine = learned @ direction / np.linalg.norm(learned)
    assert cosine > 0.95
    test_x, test_good, _ = hidden_set(800, seed=1, direction=direction)
    assert auroc([probe.logit(v) for v in test_x], test_good) > 0.85
    with pytest.raises(ValueError):
        probe.logit(np.zeros(WIDTH + 1))  # another model's width


def test_out_of_fold_logits_are_honest_where_the_states_carry_nothing() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 150))  # more dimensions than a fit can use honestly
    good = list(rng.random(200) < 0.5)
    l2 = choose_l2(x, good)
    assert l2 >= 3000.0  # noise: the strongest penalties win
    assert abs(auroc(list(out_of_fold(x, good, l2)), good) - 0.5) < 0.12


def test_a_probe_feature_keeps_its_sign() -> None:
    assert MONOTONE_SIGNS["probe_prompt"] == MONOTONE_SIGNS["probe_answer"] == 1
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3000, 2))
    p = 1 / (1 + np.exp(-(1.5 * x[:, 0] - 1.0 * x[:, 1])))
    rows = [{"mean_logprob": a, "probe_answer": b} for a, b in x]
    calibration = fit_calibration(rows, list(rng.random(3000) < p), names=("mean_logprob", "probe_answer"), l2=0.01)
    weights = dict(zip(calibration.names, calibration.weights))
    assert weights["probe_answer"] == 0.0 and weights["mean_logprob"] > 1.0


def synthetic_runs(n: int, seed: int, direction: np.ndarray | None = None) -> tuple[list[Run], np.ndarray]:
    """Runs whose token signals say nothing (every answer equally sure) and whose prompt-end
    state says whether the model knows the answer."""
    x, good, direction = hidden_set(n, seed, direction)
    rng = np.random.default_rng(seed + 100)
    runs = []
    for state, right in zip(x, good):
        tokens = token_events([("Paris", -0.2 - 0.1 * rng.random()), (".", -0.05)])
        runs.append(Run("Paris.", tokens, 12, right, False, 0.01, "fact", "What is the capital?", False,
                        HiddenStates(state, rng.standard_normal(WIDTH))))
    return runs, direction


def test_calibration_fits_probes_stores_them_and_the_router_reads_them(tmp_path) -> None:
    fit_runs, direction = synthetic_runs(400, seed=5)
    held, _ = synthetic_runs(300, seed=6, direction=direction)
    identity = ModelIdentity("probe-model", "gguf-q4_1-abc")
    stored, report = fitting.calibrate(identity, fit_runs, held)
    features = [p.feature for p in stored.calibration.probes]
    assert features == ["probe_prompt", "probe_answer", "probe_both"]
    weights = dict(zip(stored.calibration.names, stored.calibration.weights))
    # The prompt's state decides here (the answer's is noise): the probes reading it lead.
    assert min(weights["probe_prompt"], weights["probe_both"]) > weights["probe_answer"]
    assert weights["probe_prompt"] + weights["probe_both"] > 0.5
    assert report.auroc > 0.8

    path = save(stored, data_dir_path(tmp_path, identity))
    assert read(path) == stored
    active = resolve(identity, [path])
    assert active.calibrated and active.calibration.probes == stored.calibration.probes

    sure, unsure = (np.asarray(direction) * 6 + 0.5), (np.asarray(direction) * -6 + 0.5)
    tokens = fit_runs[0].tokens
    scores = [assess(tokens, None, active.calibration, 12, prompt="What is the capital?",
                     hidden=HiddenStates(state, np.zeros(WIDTH))).confidence for state in (sure, unsure)]
    assert scores[0] > 0.8 > 0.2 > scores[1]
    # Without hidden states (a backend that does not export them) the probes are neutral.
    neutral = assess(tokens, None, active.calibration, 12, prompt="What is the capital?")
    assert scores[1] < neutral.confidence < scores[0]
    assert "probe_prompt" not in neutral.features


def test_the_threshold_keeps_the_targeted_share_of_right_answers() -> None:
    rng = np.random.default_rng(7)
    good = list(rng.random(500) < 0.4)
    scores = [float(rng.normal(1.0 if g else 0.0)) for g in good]
    cutoff = target_cutoff(scores, good, keep=0.9)
    right = [s for s, g in zip(scores, good) if g]
    kept = sum(s >= cutoff for s in right) / len(right)
    assert 0.9 <= kept < 0.9 + 2 / len(right)
    # Right answers the early abort escalates anyway cost the threshold some of its room.
    forced = [g and i % 10 == 0 for i, g in enumerate(good)]
    assert target_cutoff(scores, good, keep=0.9, escalated_anyway=forced) < cutoff


def test_a_gguf_calibration_is_keyed_on_the_file_and_a_replaced_file_is_stale(tmp_path) -> None:
    section = {"tensor_types": {"q4_1": 210, "f32": 61}, "sha256": "3f2a9c01b2de" + "0" * 52, "weight_bytes": 9}
    assert gguf_weights_id(section) == "q4_1-3f2a9c01b2de"
    assert gguf_weights_id({**section, "sha256": None}) == "q4_1-9b"  # imported before the digest
    assert gguf_weights_id(None) is None and declared_facts({}, "config").weights is None

    def identity(digest: str) -> ModelIdentity:
        weights = declared_facts({"gguf": {**section, "sha256": digest}}, "config").weights
        return ModelIdentity.of(EngineInfo("tvm", "SmolLM2-135M-Instruct", 2048, "cpu", "gguf", weights=weights))

    old, new = identity("aaaaaaaaaaaa" + "1" * 52), identity("bbbbbbbbbbbb" + "1" * 52)
    assert old.quantization == "gguf-q4_1-aaaaaaaaaaaa" and old.key != new.key
    rows, good = [{"mean_logprob": v} for v in np.linspace(-3, 0, 40)], [v > -1.5 for v in np.linspace(-3, 0, 40)]
    stale = ModelCalibration(old, fit_calibration(rows, good, names=("mean_logprob",)), 0.5)
    path = save(stale, tmp_path / "tandem-calibration.json")
    active = resolve(new, [path])
    assert not active.calibrated and "uncalibrated" in active.notice and "aaaaaaaaaaaa" in active.notice
