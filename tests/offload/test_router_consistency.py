"""Sample consistency: the words an answer adds to its prompt, and how far extra draws agree."""

from __future__ import annotations

from conftest_router import ScriptedEngine, confident, loopback_provider, recording_server  # noqa: F401
from engine.api import FinishEvent, GenerationRequest, Timings, TokenEvent, Usage
from offload.calibrations import ActiveCalibration
from offload.confidence import fit_calibration
from offload.consistency import answer_key, consistency_features, could_flip
from offload.privacy import ConversationPolicy, PrivacySettings
from offload.router import Router, Turn


def test_the_key_is_what_the_first_sentence_adds_to_the_prompt() -> None:
    prompt = "What is the capital of France?"
    assert answer_key("The capital of France is Paris. It is a big city.", prompt) == {"paris"}
    assert answer_key("Paris!", prompt) == {"paris"}
    assert answer_key("It is 3.5 kilograms.", "How many kilograms is 3500 grams?") == {"3.5"}


def test_agreeing_draws_score_higher_than_scattered_ones() -> None:
    prompt = "What is the capital of Burkina Faso?"
    agreeing = consistency_features("Ouagadougou.", ["The capital is Ouagadougou.", "Ouagadougou"], prompt)
    scattered = consistency_features("Ouagadougou.", ["Bamako.", "The capital is Niamey, a city."], prompt)
    assert agreeing == {"sample_agreement": 1.0, "sample_overlap": 1.0}
    assert scattered["sample_agreement"] == 0.0 and scattered["sample_overlap"] == 0.0
    assert consistency_features("Ouagadougou.", [], prompt) == {}


def test_a_score_fitted_with_agreement_treats_it_as_neutral_where_no_draws_were_made() -> None:
    rows = [{"sample_agreement": a, "mean_logprob": -1.0} for a in (0.0, 0.25, 0.75, 1.0) * 5]
    good = [a >= 0.5 for a in (0.0, 0.25, 0.75, 1.0) * 5]
    calibration = fit_calibration(rows, good, names=("sample_agreement", "mean_logprob"))
    low, high = calibration.score(rows[0]), calibration.score(rows[3])
    assert low < calibration.score({"mean_logprob": -1.0}) < high


class DrawingEngine(ScriptedEngine):
    """FAKE engine (ScriptedEngine): its answer to the user, and at temperature 1 (the router's
    extra draws) the next of `draws`, so a test chooses whether the draws agree."""

    def __init__(self, answer: str, draws: list[str]) -> None:
        super().__init__(lambda text: confident(answer))
        self.draws = draws
        self.drawn = 0

    def generate(self, request: GenerationRequest, cancel=None):
        if request.temperature != 1.0:
            yield from super().generate(request, cancel)
            return
        self.drawn += 1
        text = self.draws[(self.drawn - 1) % len(self.draws)]
        yield TokenEvent(text, 0, -0.1, ())
        yield FinishEvent("stop", Usage(3, 1), Timings(1.0, 1.0, 1.0))


def agreement_only(cutoff: float) -> ActiveCalibration:
    """A calibration that trusts sample agreement alone (3 draws at temperature 1)."""
    rows = [{"sample_agreement": a} for a in (0.0, 1 / 3, 2 / 3, 1.0) * 10]
    good = [row["sample_agreement"] > 0.5 for row in rows]
    return ActiveCalibration(fit_calibration(rows, good, names=("sample_agreement",)), True, cutoff=cutoff,
                             samples=3, sample_temperature=1.0)


def route_of(engine: ScriptedEngine, active: ActiveCalibration, recording_server) -> str:
    router = Router(engine, PrivacySettings(mode="auto"), loopback_provider(recording_server), cloud_model="echo-1",
                    calibration=active)
    turn = Turn(1, [{"role": "user", "content": "What is the capital of Burkina Faso?"}],
                ConversationPolicy(cloud_opt_in=True))
    return list(router.run(turn))[-1].route


def test_the_router_draws_samples_where_they_decide_and_escalates_a_scattered_answer(recording_server) -> None:
    agreeing = DrawingEngine("Ouagadougou.", ["It is Ouagadougou."])
    scattered = DrawingEngine("Ouagadougou.", ["Bamako.", "Niamey.", "Dakar."])
    assert route_of(agreeing, agreement_only(0.5), recording_server) == "local"
    assert route_of(scattered, agreement_only(0.5), recording_server) == "cloud"
    assert agreeing.drawn == 3 and scattered.drawn == 3


def test_no_samples_are_drawn_where_they_could_not_change_the_route(recording_server) -> None:
    engine = DrawingEngine("Ouagadougou.", ["Bamako."])
    active = agreement_only(0.0)  # nothing scores below 0: the answer stays local whatever the draws say
    assert not could_flip({}, active.calibration, 0.0)
    assert route_of(engine, active, recording_server) == "local" and engine.drawn == 0


def test_a_top_up_keeps_the_draws_made_and_draws_only_the_rest() -> None:
    from offload.calibrate import Run, add_samples

    engine = DrawingEngine("Paris.", ["Lyon.", "Paris is it."])
    run = Run("Paris.", [], 5, True, False, 0.0, prompt="What is the capital of France?", samples=("Paris.",) * 2)
    add_samples(engine, [run], 3)
    assert run.samples == ("Paris.", "Paris.", "Lyon.") and engine.drawn == 1
    add_samples(engine, [run], 2)
    assert run.samples == ("Paris.", "Paris.") and engine.drawn == 1
