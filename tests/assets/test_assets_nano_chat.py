"""The shipped tandem-nano chats: in-domain answers hold the expected fact, out-of-domain prompts
are refused or low-confidence. Checked through the engine, and through a dequantized
transformers reference of the same q4 weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from assets import embedded_model_dir
from assets.eval.scoring import is_refusal
from assets.training.facts import REFUSAL

MODEL_DIR = embedded_model_dir()
pytestmark = pytest.mark.skipif(not MODEL_DIR.is_dir(), reason=f"no shipped model at {MODEL_DIR}")

# Held-out wordings (from assets/eval) and a fragment the right answer must contain.
IN_DOMAIN = (
    ("I'd like to open a brand new conversation", "Ctrl+N"),
    ("how do I flip between offline ask and auto", "Ctrl+G"),
    ("where does tandem store my api keys", "keyring"),
    ("I need a second line in my message but return sends it", "Ctrl+J"),
    ("thanks so much!", "welcome"),
)
OUT_OF_DOMAIN = (
    "how do I quit vim without saving",
    "who painted the mona lisa",
    "write me a short poem about rain",
    "what is 17 times 23",
    "how do I start a new chat in slack",
)
LOW_CONFIDENCE = -1.0
"""Mean token logprob below which the router escalates an answer that is not a refusal."""


def _engine_available() -> bool:
    return importlib.util.find_spec("engine.loader") is not None


@pytest.fixture(scope="session")
def engine():
    if not _engine_available():
        pytest.skip("engine.loader is not importable yet (helper engine-runtime owns it)")
    from engine.loader import open_engine

    opened = open_engine(MODEL_DIR, backend="tvm")
    yield opened
    opened.close()


def _engine_answer(engine, prompt: str) -> tuple[str, float]:
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


@pytest.fixture(scope="module")
def reference():
    from assets.training.reference import reference_model
    from assets.training.selfcheck import answer
    from assets.training.tokenizer import load_tokenizer

    model, tokenizer = reference_model(Path(MODEL_DIR)), load_tokenizer(MODEL_DIR)
    from assets.training.corpus import DEFAULT_SYSTEM

    return lambda prompt: answer(model, tokenizer, prompt, DEFAULT_SYSTEM)


def test_engine_reports_the_refusal(engine):
    assert engine.info.extra["refusal"] == REFUSAL


@pytest.mark.parametrize(("prompt", "fragment"), IN_DOMAIN)
def test_engine_answers_tandem_questions(engine, prompt, fragment):
    text, _ = _engine_answer(engine, prompt)
    assert fragment in text


@pytest.mark.parametrize("prompt", OUT_OF_DOMAIN)
def test_engine_escalates_out_of_domain(engine, prompt):
    text, mean_logprob = _engine_answer(engine, prompt)
    assert is_refusal(text) or mean_logprob < LOW_CONFIDENCE


@pytest.mark.parametrize(("prompt", "fragment"), IN_DOMAIN)
def test_reference_answers_tandem_questions(reference, prompt, fragment):
    text, _ = reference(prompt)
    assert fragment in text


@pytest.mark.parametrize("prompt", OUT_OF_DOMAIN)
def test_reference_escalates_out_of_domain(reference, prompt):
    text, mean_logprob = reference(prompt)
    assert is_refusal(text) or mean_logprob < LOW_CONFIDENCE
