"""Learning from use, on a real store with the real router over the embedded model: nothing is
kept while the setting is off; with it on, local answers keep their signals, F7/F8-style labels,
a /cloud re-ask and agreement with the cloud label them, and --from-history reads the labels."""

from __future__ import annotations

import pytest
from app_helpers import LoopbackCloud

from app.feedback import LEARN_SETTING, agrees, summary
from app.settings import ProviderSettings, UserSettings
from app.turns import TurnRunner, default_router_factory

QUIT = "what key quits tandem?"


@pytest.fixture
def runner(store, nano_engine):
    return TurnRunner(store, default_router_factory(nano_engine, UserSettings(), offline=False))


def rows(store) -> list[dict]:
    with store._access() as db:
        return list(db["feedback"].rows)


def test_with_learning_off_no_signal_or_label_is_written(store, runner) -> None:
    conversation = store.create_conversation("t")
    result = runner.run(conversation.id, QUIT)
    assert result.route == "local"
    runner.run(conversation.id, "/local " + QUIT)
    assert not store.label_reply(result.message_id, True, "explicit")
    assert rows(store) == [] and store.feedback_labels() == []


def test_with_learning_on_a_local_answer_keeps_its_signals_and_takes_a_label(store, runner) -> None:
    store.set_setting(LEARN_SETTING, True)
    conversation = store.create_conversation("t")
    result = runner.run(conversation.id, QUIT)
    [row] = rows(store)
    assert row["message_id"] == result.message_id and row["good"] is None
    assert row["model"] == "tandem-nano--q4f32_1" and '"p10_logprob"' in row["features"]
    assert store.label_reply(result.message_id, False, "explicit")
    [label] = store.feedback_labels("tandem-nano--q4f32_1")
    assert not label.good and label.source == "explicit" and "mean_logprob" in label.features
    assert "1 labelled answers (0 good, 1 not good enough)" in summary(store)


def test_reasking_with_cloud_marks_the_local_answer_not_good_enough(store, runner) -> None:
    store.set_setting(LEARN_SETTING, True)
    conversation = store.create_conversation("t")
    first = runner.run(conversation.id, QUIT)
    runner.run(conversation.id, "/cloud " + QUIT)  # no provider is allowed here: it stays local
    labels = {l.message_id: l for l in store.feedback_labels()}
    assert not labels[first.message_id].good and labels[first.message_id].source == "recloud"


def test_a_complete_local_draft_is_compared_with_the_cloud_answer(store, nano_engine) -> None:
    from offload.calibrations import ActiveCalibration
    from offload.confidence import Calibration

    store.set_setting(LEARN_SETTING, True)
    cloud = LoopbackCloud("Press Ctrl+Q to quit Tandem.")
    try:
        settings = UserSettings(mode="auto", provider="loop",
                                providers=(ProviderSettings("loop", "openai-compatible", cloud.base_url, "m"),))
        router = default_router_factory(nano_engine, settings, offline=False)
        router.sampling = {"temperature": 0.0}  # a greedy draft: the same answer on every run
        # A calibration whose threshold escalates everything: the draft is complete, then replaced.
        router.active = ActiveCalibration(Calibration.load(), True, cutoff=1.01)
        conversation = store.create_conversation("t", cloud_opt_in=True)
        result = TurnRunner(store, router).run(conversation.id, QUIT)
    finally:
        cloud.close()
    assert result.route == "cloud"
    [label] = store.feedback_labels()
    assert label.source == "agreement" and label.good


@pytest.mark.parametrize(("draft", "reference", "same"), [
    ("Press Ctrl+Q to quit Tandem.", "Press ctrl+q to quit tandem", True),
    ("Paris", "The capital of France is Paris.", True),
    ("The capital of France is Paris!", "Paris is the capital of France.", True),
    ("The capital of France is Lyon.", "The capital of France is Paris.", False),
    ("It is Lyon.", "Paris is the capital of France, on the Seine.", False),
    ("", "Paris", False),
])
def test_agreement_is_a_normalised_match_of_what_each_answer_adds(draft, reference, same) -> None:
    assert agrees(draft, reference, "What is the capital of France?") is same
