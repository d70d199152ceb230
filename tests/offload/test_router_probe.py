"""The hidden-state probe and what the calibration builds on it: the probe recovers a known
direction, its feature keeps its known sign, the calibrate step fits probes on the runs' middle
states and stores them (none without them), the router's assessment reads them from the
FinishEvent's states, a calibration stored with final-state probes keeps reading those, the
threshold keeps the targeted share of right answers, and a GGUF's calibration is keyed on its file."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest_router import token_events
from engine.api import EngineInfo, HiddenStates
from engine.model_facts import declared_facts, gguf_weights_id
from offload import calibrate as fitting
from offload import probe as probing
from offload.calibrate import Run, auroc, target_cutoff
from offload.calibrations import ModelCalibration, ModelIdentity, data_dir_path, read, resolve, save
from offload.confidence import MONOTONE_SIGNS, StreamMonitor, assess, fit_calibration
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
    """Runs whose token signals say nothing (every answer equally sure) and whose middle state at
    the prompt's end says whether the model knows the answer (the final states are noise)."""
    x, good, direction = hidden_set(n, seed, direction)
    rng = np.random.default_rng(seed + 100)
    runs = []
    for state, right in zip(x, good):
        tokens = token_events([("Paris", -0.2 - 0.1 * rng.random()), (".", -0.05)])
        noise = rng.standard_normal((3, WIDTH))
        runs.append(Run("Paris.", tokens, 12, right, False, 0.01, "fact", "What is the capital?", False,
                        HiddenStates(noise[0], noise[1], prompt_middle=state, answer_middle=noise[2])))
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
    zero = np.zeros(WIDTH)
    scores = [assess(tokens, None, active.calibration, 12, prompt="What is the capital?",
                     hidden=HiddenStates(zero, zero, state, zero)).confidence for state in (sure, unsure)]
    assert scores[0] > 0.8 > 0.2 > scores[1]
    # Without hidden states (a backend that does not export them) the probes are neutral.
    neutral = assess(tokens, None, active.calibration, 12, prompt="What is the capital?")
    assert scores[1] < neutral.confidence < scores[0]
    assert "probe_prompt" not in neutral.features
    # Nor do final states alone (a backend without the middle ones) feed a middle-state probe.
    final_only = assess(tokens, None, active.calibration, 12, prompt="What is the capital?",
                        hidden=HiddenStates(sure, zero))
    assert final_only.confidence == neutral.confidence


def test_runs_without_middle_states_fit_no_probes() -> None:
    runs, _ = synthetic_runs(200, seed=7)
    final_only = [replace(run, hidden=HiddenStates(run.hidden.prompt_end, run.hidden.answer_end)) for run in runs]
    stored, _ = fitting.calibrate(ModelIdentity("probe-model", "gguf-q4_1-abc"), final_only, final_only[:50])
    assert stored.calibration.probes == ()


def test_a_calibration_stored_with_final_state_probes_keeps_reading_them() -> None:
    """Calibrations fitted before the middle states read prompt_end / answer_end: still valid."""
    x, good, direction = hidden_set(400, 8)
    old = probing.fit_probe("probe_prompt", x, list(good), 1000.0)
    old = replace(old, state="prompt_end")
    zero = np.zeros(WIDTH)
    sure, unsure = (HiddenStates(direction * 6, zero, zero, zero), HiddenStates(direction * -6, zero, zero, zero))
    assert old.logit(probing.state_vector(sure, old.state)) > 0 > old.logit(probing.state_vector(unsure, old.state))


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


def test_the_abort_rule_reads_the_prompt_probe_from_the_first_token() -> None:
    """Token signals that say nothing, a middle state that decides: the stored abort rule stops
    a draft whose question the model does not know at its first token (the engine sends the
    prompt's states with it), and lets the same tokens run for a question it knows."""
    fit_runs, direction = synthetic_runs(400, seed=9)
    stored, _ = fitting.calibrate(ModelIdentity("probe-model", "gguf-q4_1-abc"), fit_runs, [])
    rule = stored.abort
    assert rule is not None and 1 in rule.checkpoints
    assert [p.feature for p in rule.calibration.probes] == ["probe_prompt"]
    zero = np.zeros(WIDTH)

    def first_stop(state: np.ndarray) -> int | None:
        events = list(fit_runs[0].tokens)
        events[0] = replace(events[0], prompt_hidden=HiddenStates(zero, (), prompt_middle=state))
        monitor = StreamMonitor(None, abort=rule, prompt="What is the capital?")
        return next((n for n, event in enumerate(events, start=1) if monitor.observe(event)), None)

    assert first_stop(np.asarray(direction) * -6 + 0.5) == 1
    assert first_stop(np.asarray(direction) * 6 + 0.5) is None
    # Without the prompt's states (another backend) the probe is neutral: these tokens go on.
    monitor = StreamMonitor(None, abort=rule, prompt="What is the capital?")
    assert not any(monitor.observe(event) for event in fit_runs[0].tokens)
