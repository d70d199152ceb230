"""`tandem models calibrate NAME`: fits, measures and stores a model's calibration, which the next
turn's router then uses; --from-history adds the feedback labels; bad input gets a clear message.

The calibrated engine here is KnowsHalf, a fake (named as one): it answers the general set's
prompts from their accepted answers, confidently on half the topics and with low-probability
guesses on the rest, so the fit has something real to find. SmolLM2 runs in the end-to-end test
(test_app_calibrate_smollm2.py) once the gguf and kernels branches are merged."""

from __future__ import annotations

import hashlib
import json

import pytest

from app.cli import main
from app.settings import UserSettings
from app.turns import default_router_factory
from assets.eval import general
from engine.api import Alternative, EngineInfo, FinishEvent, Timings, TokenEvent, Usage

ANSWERS = {i.prompt: i for split in general.SPLITS for i in general.load(split)}


class KnowsHalf:
    """FAKE engine: right and sure on half the topics, guessing on the rest."""

    def __init__(self, model_id: str = "knows-half") -> None:
        self.info = EngineInfo("fake", model_id, 2048, "cpu", "q4_1")

    def count_prompt_tokens(self, messages) -> int:
        return sum(len(m["content"].split()) for m in messages)

    def generate(self, request, cancel=None):
        prompt = request.messages[-1]["content"]
        item = ANSWERS.get(prompt)
        knows = item is not None and hashlib.sha256(item.topic.encode()).digest()[0] % 2 == 0
        words = (["It", " is", f" {item.accept[0]}", "."] if knows else ["It", " is", " banana", " maybe", "."]) \
            if item else ["Hello", "."]
        for n, word in enumerate(words):
            logprob = -0.05 if knows else -2.5
            yield TokenEvent(word, n, logprob, (Alternative(n, word, logprob), Alternative(n + 1, "~", logprob - 1.0)))
        yield FinishEvent("stop", Usage(12, len(words)), Timings(1.0, 100.0, 100.0))

    def close(self) -> None:
        pass


@pytest.fixture
def knows_half(monkeypatch, tmp_path):
    folder = tmp_path / "knows-half"
    folder.mkdir()
    engine = KnowsHalf()
    monkeypatch.setattr("app.local_models.open_model", lambda model, on_progress=None: engine)
    return folder, engine


def test_calibrate_fits_measures_stores_and_the_next_turn_uses_it(knows_half, isolated_home, capsys) -> None:
    folder, engine = knows_half
    assert main(["models", "calibrate", str(folder), "--limit", "80"]) == 0
    out = capsys.readouterr()
    assert "calibrate [" in out.err and "80/80" in out.err  # the progress bar
    assert "Held-out half (80 prompts)" in out.out and "AUROC 1.000" in out.out
    stored = json.loads((isolated_home / "calibrations" / "knows-half--q4_1.json").read_text())
    assert stored["identity"] == {"model_id": "knows-half", "quantization": "q4_1"}
    assert stored["heldout_auroc"] == 1.0 and 0 < stored["cutoff"] < 1 and stored["n_heldout"] == 80

    router = default_router_factory(engine, UserSettings(model_dir=str(folder)), offline=False)
    assert router.active.calibrated and router.active.source.endswith("knows-half--q4_1.json")
    assert router.cutoff == pytest.approx(stored["cutoff"])


def test_an_uncalibrated_model_gets_the_default_and_says_so(knows_half) -> None:
    folder, engine = knows_half
    router = default_router_factory(engine, UserSettings(model_dir=str(folder)), offline=False)
    assert not router.active.calibrated and "tandem models calibrate knows-half" in router.active.notice


def test_from_history_adds_the_feedback_labels(knows_half, isolated_home, capsys) -> None:
    from app.store import Store

    folder, engine = knows_half
    with Store.open(isolated_home / "tandem.db") as store:
        conversation = store.create_conversation("t")
        for n in range(3):
            message = store.add_message(conversation.id, "assistant", f"answer {n}", route="local")
            store.record_feedback(message_id=message.id, conversation_id=conversation.id, model="knows-half--q4_1",
                                  features={"mean_logprob": -0.1, "p10_logprob": -0.2}, confidence=0.9,
                                  answer=f"answer {n}", good=n != 0, source="explicit")
    assert main(["models", "calibrate", str(folder), "--limit", "40", "--from-history"]) == 0
    out = capsys.readouterr().out
    assert "3 feedback labels for knows-half (q4_1)" in out and "3 feedback labels)" in out
    stored = json.loads((isolated_home / "calibrations" / "knows-half--q4_1.json").read_text())
    assert stored["history_labels"] == 3 and stored["n_fit"] == 43
    with Store.open(isolated_home / "tandem.db") as store:
        assert store.get_setting("router.last_fit")["history_labels"] == 3


def test_an_unknown_model_is_named(isolated_home, capsys) -> None:
    assert main(["models", "calibrate", "no-such-model"]) == 3
    assert "no local model is called 'no-such-model'" in capsys.readouterr().err


def test_too_few_answers_to_fit_saves_nothing(knows_half, isolated_home, capsys) -> None:
    folder, _ = knows_half
    assert main(["models", "calibrate", str(folder), "--limit", "4"]) == 1
    assert "needs at least 3 of each" in capsys.readouterr().err
    assert not (isolated_home / "calibrations").exists()
