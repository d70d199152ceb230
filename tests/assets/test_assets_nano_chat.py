"""The shipped tandem-nano chats through the engine: in-domain answers hold the expected fact,
out-of-domain prompts are refused or low-confidence, and the engine's greedy answers match a
transformers reference built from the same q4 weights."""

from __future__ import annotations

import importlib.util

import pytest

from assets import embedded_model_dir
from assets.eval.scoring import is_refusal
from assets.training.facts import REFUSAL

MODEL_DIR = embedded_model_dir()
pytestmark = pytest.mark.skipif(not MODEL_DIR.is_dir(), reason=f"no shipped model at {MODEL_DIR}")

# Held-out wordings from assets/eval, and a fragment the right answer must contain.
IN_DOMAIN = (
    ("I'd like to open a brand new conversation", "Ctrl+N"),
    ("how do I flip between offline ask and auto", "Ctrl+G"),
    ("how do I add my openai api key", "tandem keys set"),
    ("what's the quit shortcut", "Ctrl+Q"),
    ("thanks a million", "welcome"),
)
OUT_OF_DOMAIN = (
    "how do I quit vim without saving",
    "write me a short poem about rain",
    "what is 17 times 23",
    "how do I start a new chat in slack",
    "translate \"where is the library\" into french",
)
LOW_CONFIDENCE = -1.0
"""Mean token logprob below which an answer that is not a refusal counts as low-confidence."""


@pytest.fixture(scope="session")
def engine():
    if importlib.util.find_spec("engine.loader") is None:
        pytest.skip("engine.loader is not importable (helper engine-runtime owns it)")
    from engine.loader import open_engine

    opened = open_engine(MODEL_DIR, backend="tvm")
    yield opened
    opened.close()


def _answer(engine, prompt: str) -> tuple[str, float]:
    from engine.api import FinishEvent, GenerationRequest

    request = GenerationRequest(messages=[{"role": "user", "content": prompt}], max_tokens=96,
                                temperature=0.0, top_p=1.0, seed=0)
    text, logprobs = [], []
    for event in engine.generate(request):
        if isinstance(event, FinishEvent):
            assert event.reason == "stop"
            break
        text.append(event.text)
        logprobs.append(event.logprob)
    return "".join(text), sum(logprobs) / len(logprobs)


def test_engine_reports_the_refusal_and_skills(engine):
    assert engine.info.refusal == REFUSAL
    assert engine.info.skills == ("tandem_help", "small_talk")


@pytest.mark.parametrize(("prompt", "fragment"), IN_DOMAIN)
def test_answers_tandem_questions(engine, prompt, fragment):
    text, _ = _answer(engine, prompt)
    assert fragment in text


@pytest.mark.parametrize("prompt", OUT_OF_DOMAIN)
def test_escalates_out_of_domain(engine, prompt):
    text, mean_logprob = _answer(engine, prompt)
    assert is_refusal(text) or mean_logprob < LOW_CONFIDENCE


def test_engine_matches_the_transformers_reference(engine):
    from assets.training.corpus import DEFAULT_SYSTEM
    from assets.training.reference import reference_model
    from assets.training.selfcheck import answer
    from assets.training.tokenizer import load_tokenizer

    model, tokenizer = reference_model(MODEL_DIR), load_tokenizer(MODEL_DIR)
    for prompt in [p for p, _ in IN_DOMAIN[:3]] + list(OUT_OF_DOMAIN[:2]):
        reference_text, reference_logprob = answer(model, tokenizer, prompt, DEFAULT_SYSTEM)
        engine_text, engine_logprob = _answer(engine, prompt)
        assert engine_text == reference_text
        assert engine_logprob == pytest.approx(reference_logprob, abs=0.05)
