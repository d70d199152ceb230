"""A model's declared facts (refusal, skills) read from the `tandem` section into typed values."""

from __future__ import annotations

import pytest

from engine.errors import ModelFileError
from engine.model_facts import DeclaredFacts, declared_facts

SOURCE = "/models/x/mlc-chat-config.json"


def test_a_model_that_declares_nothing_has_no_refusal_and_no_skill_list() -> None:
    assert declared_facts({}, SOURCE) == DeclaredFacts(None, None)


def test_skills_are_names_or_objects_with_a_name() -> None:
    facts = declared_facts({"refusal": "Not here.", "skills": ["small_talk", {"name": "code", "level": 2}]}, SOURCE)
    assert facts == DeclaredFacts("Not here.", ("small_talk", "code"))


def test_an_empty_skill_list_is_declared_not_absent() -> None:
    assert declared_facts({"skills": []}, SOURCE).skills == ()


@pytest.mark.parametrize(
    ("tandem", "key"),
    [({"skills": "code"}, "tandem.skills"), ({"skills": [3]}, "tandem.skills"), ({"refusal": ["no"]}, "tandem.refusal")],
)
def test_a_malformed_fact_names_the_file_and_the_key(tandem, key) -> None:
    with pytest.raises(ModelFileError) as raised:
        declared_facts(tandem, SOURCE)
    assert str(raised.value).startswith(f"{SOURCE}: {key}")
