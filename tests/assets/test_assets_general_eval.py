"""The general eval set: big enough, split by topic with no fact in both halves, every kind in
both, reproducible from its generators, and graded by normalised match."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from assets.eval import general
from assets.eval.general import generate, scoring


@pytest.fixture(scope="module")
def halves() -> dict[str, list]:
    return {split: general.load(split) for split in general.SPLITS}


def test_at_least_800_graded_prompts_over_every_kind(halves) -> None:
    items = halves["calibrate"] + halves["heldout"]
    assert len(items) >= 800
    kinds = Counter(i.kind for i in items)
    assert set(kinds) == {"facts", "arithmetic", "units", "dates", "translation", "plurals", "tenses",
                          "antonyms", "code", "reasoning", "tandem"}
    assert len({i.id for i in items}) == len(items)
    assert len(general.open_ended()) >= 30


def test_halves_share_no_topic_and_no_prompt_but_cover_every_kind(halves) -> None:
    calibrate, heldout = halves["calibrate"], halves["heldout"]
    assert not {i.topic for i in calibrate} & {i.topic for i in heldout}
    assert not {i.prompt for i in calibrate} & {i.prompt for i in heldout}
    assert {i.kind for i in calibrate} == {i.kind for i in heldout}
    assert 0.4 < len(calibrate) / (len(calibrate) + len(heldout)) < 0.6


def test_the_same_subject_stays_in_one_half(halves) -> None:
    where = {i.prompt: i.split for half in halves.values() for i in half}
    assert where["What is the capital of Japan?"] == where["What is the currency of Japan called?"]
    assert where["What is the French word for 'cat'?"] == where["What is 'cat' in German?"]


def test_committed_files_are_what_the_generator_builds(halves, tmp_path) -> None:
    generate.write(tmp_path)
    for split in general.SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_text() == (general.GENERAL_DIR / f"{split}.jsonl").read_text(), (
            f"{split}.jsonl is stale: run python -m assets.eval.general.generate")


def test_no_prompt_gives_its_answer_away(halves) -> None:
    for item in halves["calibrate"] + halves["heldout"]:
        if not item.choices:
            assert not any(scoring.mentions(item.prompt, a) for a in item.accept), item
        else:
            assert all(scoring.mentions(item.prompt, c) for c in item.choices), item


def test_computed_answers_are_right() -> None:
    rows = [json.loads(line) for line in (general.GENERAL_DIR / "heldout.jsonl").read_text().splitlines()]
    for row in rows:
        if row["kind"] == "arithmetic" and row["prompt"].startswith("What is ") and " + " in row["prompt"]:
            a, b = row["prompt"].removeprefix("What is ").rstrip("?").split(" + ")
            assert int(row["accept"][0]) == int(a) + int(b)


@pytest.mark.parametrize(
    ("answer", "accept", "correct"),
    [
        ("The capital of France is Paris.", ["Paris"], True),
        ("The capital of France is Lyon, not far from Parisian suburbs.", ["Paris"], False),
        ("23 + 45 = 68", ["68"], True),
        ("23 + 45 = 678", ["68"], False),
        ("That makes 1,708 in total.", ["1708"], True),
        ("It is 4.0", ["4"], True),
        ("A spider has eight legs.", ["8", "eight"], True),
        ("Press Ctrl+Q to quit.", ["Ctrl+Q"], True),
        ("Press ctrl-q.", ["Ctrl+Q"], True),
        ("Press Ctrl+W to quit.", ["Ctrl+Q"], False),
        ("Le mot est « fenêtre ».", ["fenetre"], True),
        ("Brasília", ["Brasilia"], True),
        ("Pi is about 3.14.", ["3.14"], True),
        ("Pi is about 3.", ["3.14"], False),
        ("", ["Paris"], False),
    ],
)
def test_normalised_match(answer: str, accept: list[str], correct: bool) -> None:
    assert scoring.is_correct(answer, accept) is correct


def test_choices_take_the_first_option_named() -> None:
    choices = ("Anna", "Ben", "Carla")
    assert scoring.is_correct("Anna is the tallest.", ["Anna"], choices)
    assert not scoring.is_correct("Ben is the tallest, taller than Anna.", ["Anna"], choices)
    assert not scoring.is_correct("Nobody.", ["Anna"], choices)
    assert scoring.is_correct("No, it is not.", ["no"], ("yes", "no"))
    assert not scoring.is_correct("Yes, it is a leap year, not no.", ["no"], ("yes", "no"))


def test_stratified_slice_spreads_over_kinds(halves) -> None:
    chosen = general.stratified_slice(halves["calibrate"], 22)
    assert len(chosen) == 22 and len({i.kind for i in chosen}) == 11


def test_unknown_split_is_named() -> None:
    with pytest.raises(ValueError, match="calibrate, heldout"):
        general.load("train")
