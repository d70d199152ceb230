"""The training corpus: deterministic per seed, covering every fact, and never holding an eval prompt."""

from __future__ import annotations

from collections import Counter

import pytest

from assets.eval.scoring import in_domain_cases, out_of_domain_cases
from assets.training.corpus import CorpusGenerator, generate, held_out_prompts, normalize
from assets.training.facts import FACTS, REFUSAL
from assets.training.phrasings import PHRASINGS


@pytest.fixture(scope="module")
def sample():
    return generate(20_000, seed=2)


def _users(dialogues):
    return [m["content"] for d in dialogues for m in d.messages if m["role"] == "user"]


def test_same_seed_gives_same_dialogues():
    assert generate(500, seed=11) == generate(500, seed=11)


def test_different_seeds_give_different_dialogues():
    assert generate(200, seed=11) != generate(200, seed=12)


def test_held_out_prompts_cover_both_eval_sets():
    held = held_out_prompts()
    assert len(held) >= 200
    assert all(normalize(c.prompt) in held for c in in_domain_cases() + out_of_domain_cases())


def test_no_eval_prompt_reaches_training(sample):
    held = held_out_prompts()
    leaked = [p for p in _users(sample) if normalize(p) in held]
    assert leaked == []


def test_a_held_out_prompt_is_redrawn_not_emitted():
    """Forbid every prompt of an unfiltered stream's first dialogues: the filtered stream avoids them."""
    plain = generate(50, seed=5)
    forbidden = frozenset(normalize(p) for p in _users(plain))
    filtered = CorpusGenerator(5, held_out=forbidden)
    emitted = [m["content"] for _ in range(50) for m in filtered.dialogue().messages if m["role"] == "user"]
    assert not any(normalize(p) in forbidden for p in emitted)


def test_every_fact_is_taught_with_its_canonical_answer(sample):
    answers = Counter(m["content"] for d in sample for m in d.messages if m["role"] == "assistant")
    for fact in FACTS:
        assert answers[fact.answer] >= 50, fact.id


def test_refusals_are_fifteen_to_twenty_percent_and_varied(sample):
    turns = [(u["content"], a["content"]) for d in sample
             for u, a in zip(d.messages[-2::-2], d.messages[-1::-2]) if a["role"] == "assistant"]
    refused = [prompt for prompt, answer in turns if answer == REFUSAL]
    assert 0.15 <= len(refused) / len(turns) <= 0.21
    assert len(set(refused)) / len(refused) > 0.8


def test_every_fact_has_phrasings():
    for fact in FACTS:
        phrasing = PHRASINGS[fact.id]
        assert phrasing.actions or phrasing.subjects or phrasing.questions, fact.id
