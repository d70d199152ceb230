"""Per-model calibration: the fit recovers known weights and keeps its signs; a model's stored
calibration is used, and a missing, stale or corrupt one falls back to the model-agnostic default
with a notice, the reply labelled "uncalibrated"; the calibrated early-abort rule stops a draft."""

from __future__ import annotations

import numpy as np
import pytest

from conftest_router import ScriptedEngine, confident, recording_server, unsure  # noqa: F401
from engine.api import EngineInfo
from offload.calibrations import (
    MODEL_FOLDER_FILE,
    ActiveCalibration,
    ModelCalibration,
    ModelIdentity,
    data_dir_path,
    model_agnostic_default,
    read,
    resolve,
    save,
)
from offload.confidence import (
    MONOTONE_SIGNS,
    AbortRule,
    Calibration,
    StreamMonitor,
    fit_calibration,
)
from offload.events import Notice, TurnDone
from offload.privacy import PrivacySettings
from offload.router import Router, Turn

NANO = ModelIdentity("scripted-nano", "none")


def synthetic(weights: dict[str, float], bias: float, n: int, seed: int):
    """Standardised features and labels drawn from a known logistic model."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(weights)))
    p = 1 / (1 + np.exp(-(x @ np.array(list(weights.values())) + bias)))
    rows = [dict(zip(weights, row)) for row in x]
    return rows, list(rng.random(n) < p)


def test_the_fit_recovers_known_weights() -> None:
    truth = {"p10_logprob": 1.5, "first_logprob": 0.8, "low_share": -1.0, "log_prompt_tokens": 0.5}
    rows, good = synthetic(truth, 0.3, 6000, seed=0)
    calibration = fit_calibration(rows, good, names=tuple(truth), l2=0.01)
    fitted = dict(zip(calibration.names, calibration.weights))
    # The fit standardises with the sample's own spread (close to 1 here).
    for name, weight in truth.items():
        assert fitted[name] == pytest.approx(weight, abs=0.15), name
    assert calibration.bias == pytest.approx(0.3, abs=0.15)


def test_the_fit_respects_the_known_signs_where_the_data_pull_the_other_way() -> None:
    # The data say a surer first token means a WRONG answer (a confidently wrong model).
    truth = {"p10_logprob": 1.5, "first_logprob": -1.2, "low_share": 0.9, "log_prompt_tokens": -0.5}
    rows, good = synthetic(truth, 0.0, 3000, seed=1)
    calibration = fit_calibration(rows, good, names=tuple(truth), l2=0.01)
    fitted = dict(zip(calibration.names, calibration.weights))
    assert MONOTONE_SIGNS["first_logprob"] == 1 and MONOTONE_SIGNS["low_share"] == -1
    assert fitted["first_logprob"] >= 0 and fitted["low_share"] <= 0
    assert fitted["p10_logprob"] > 1.0  # the feature whose sign agrees is still learned
    assert fitted["log_prompt_tokens"] < 0  # no known sign: free


def stored(identity: ModelIdentity = NANO, cutoff: float = 0.4) -> ModelCalibration:
    rows, good = synthetic({"mean_logprob": 2.0}, 0.0, 200, seed=2)
    return ModelCalibration(identity, fit_calibration(rows, good, names=("mean_logprob",)), cutoff,
                            heldout_auroc=0.81, n_fit=200, n_heldout=100)


def test_a_stored_calibration_round_trips_and_is_used(tmp_path) -> None:
    path = save(stored(), data_dir_path(tmp_path, NANO))
    assert path.name == "scripted-nano--none.json"
    assert read(path) == stored()
    active = resolve(NANO, [path])
    assert active.calibrated and active.cutoff == 0.4 and active.notice is None and active.heldout_auroc == 0.81


@pytest.mark.parametrize("problem", ["missing", "other model", "other quantization", "corrupt", "truncated",
                                     "unknown feature"])
def test_a_missing_stale_or_corrupt_calibration_falls_back_with_a_notice(tmp_path, problem) -> None:
    path = tmp_path / MODEL_FOLDER_FILE
    if problem == "other model":
        save(stored(ModelIdentity("another-model", "none")), path)
    elif problem == "other quantization":
        save(stored(ModelIdentity("scripted-nano", "q4f16_1")), path)
    elif problem == "corrupt":
        path.write_text("{not json")
    elif problem == "truncated":
        path.write_text(stored().to_json()[:200])
    elif problem == "unknown feature":
        path.write_text(stored().to_json().replace('"mean_logprob"', '"hidden_probe"'))
    active = resolve(NANO, [path])
    assert not active.calibrated and active.cutoff is None
    assert active.calibration == model_agnostic_default()
    assert "uncalibrated" in active.notice and "tandem models calibrate scripted-nano" in active.notice
    if problem != "missing":
        assert str(path) in active.notice


def test_a_shipped_calibration_survives_a_broken_user_file(tmp_path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("[]")
    shipped = Calibration.load()
    active = resolve(NANO, [broken], shipped=shipped)
    assert active.calibrated and active.calibration == shipped and str(broken) in active.notice


def test_the_default_ranks_surer_answers_higher() -> None:
    default = model_agnostic_default()
    sure = {"mean_logprob": -0.05, "p10_logprob": -0.3}
    guess = {"mean_logprob": -1.5, "p10_logprob": -4.0}
    assert default.score(sure) > 0.8 > 0.2 > default.score(guess)


def run_turn(router: Router, text: str) -> list:
    return list(router.run(Turn(1, [{"role": "user", "content": text}])))


def test_an_uncalibrated_model_says_so_once_and_labels_each_reply() -> None:
    engine = ScriptedEngine(lambda text: confident("Paris is the capital."))
    active = resolve(ModelIdentity.of(engine.info), [])
    router = Router(engine, PrivacySettings(mode="offline"), calibration=active)
    first, second = run_turn(router, "capital of France?"), run_turn(router, "again?")
    assert sum(isinstance(e, Notice) and "uncalibrated" in e.text for e in first) == 1
    assert not any(isinstance(e, Notice) for e in second)
    done = second[-1]
    assert isinstance(done, TurnDone) and done.route == "local" and "uncalibrated" in done.reason


def test_the_stored_threshold_decides_unless_the_caller_sets_one(recording_server) -> None:
    from conftest_router import loopback_provider
    from offload.confidence import EscalationThreshold

    engine = ScriptedEngine(lambda text: [(w, -0.7) for w in ("Paris", " is", " it", ".")])
    calibration = stored().calibration
    score = calibration.score({"mean_logprob": -0.7})
    strict = ActiveCalibration(calibration, True, cutoff=score + 0.05)
    lenient = ActiveCalibration(calibration, True, cutoff=score - 0.05)
    settings = PrivacySettings(mode="auto")

    def route(active, threshold=None) -> str:
        router = Router(engine, settings, loopback_provider(recording_server), cloud_model="echo-1",
                        calibration=active, threshold=threshold)
        return run_turn_opted(router)[-1].route

    assert route(strict) == "cloud" and route(lenient) == "local"
    assert route(strict, EscalationThreshold(risk=1.0)) == "local"  # the caller's cutoff 0.0 wins


def run_turn_opted(router: Router) -> list:
    from offload.privacy import ConversationPolicy

    return list(router.run(Turn(1, [{"role": "user", "content": "capital?"}], ConversationPolicy(cloud_opt_in=True))))


def test_the_calibrated_abort_rule_stops_a_doomed_draft_at_its_checkpoint() -> None:
    from conftest_router import token_events

    rows, good = synthetic({"mean_logprob": 2.0}, 0.0, 200, seed=3)
    rule = AbortRule((4, 8), fit_calibration(rows, good, names=("mean_logprob",)), cutoff=0.2)
    doomed = StreamMonitor(None, abort=rule)
    reasons = [doomed.observe(e) for e in token_events([("x", -1.5)] * 12)]
    assert reasons[:3] == [None] * 3 and reasons[3] is not None and "after 4 tokens" in reasons[3]
    fine = StreamMonitor(None, abort=rule)
    assert not any(fine.observe(e) for e in token_events([("x", -0.05)] * 12))


def test_identity_comes_from_the_engine() -> None:
    info = EngineInfo("tvm", "SmolLM2 135M/Instruct", 2048, "cpu", "q4_1")
    assert ModelIdentity.of(info).key == "SmolLM2_135M_Instruct--q4_1"


def test_text_signals_read_the_answer_the_prompt_and_how_it_ended() -> None:
    from conftest_router import token_events

    from offload.confidence import features

    tokens = token_events([("It", -0.1), (" is", -0.1), (" 42", -1.0), (" 42", -1.0)])
    values = features(tokens, prompt="What is 40 + 2?", truncated=True)
    assert values["digit_share"] == pytest.approx(4 / len("It is 42 42"))
    assert values["repeat_share"] == pytest.approx(1 - 3 / 4)
    assert values["prompt_numbers"] == pytest.approx(np.log1p(2)) and values["truncated"] == 1.0
    assert features(tokens)["prompt_numbers"] == 0.0 and features(tokens)["truncated"] == 0.0


def test_the_router_scores_the_question_it_was_asked() -> None:
    engine = ScriptedEngine(lambda text: confident("It is 42."))
    router = Router(engine, PrivacySettings(mode="offline"))
    events = run_turn(router, "What is 40 + 2?")
    from offload.events import Decision

    scored = [e for e in events if isinstance(e, Decision) and e.features]
    assert scored[-1].features["prompt_numbers"] == pytest.approx(np.log1p(2))
    assert scored[-1].draft_complete
