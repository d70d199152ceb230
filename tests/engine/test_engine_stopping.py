"""Stop strings split across deltas, stop token ids, and the text held back meanwhile."""

from __future__ import annotations

from engine.stopping import StopChecker


def feed(checker: StopChecker, deltas: list[str]) -> str:
    shown = ""
    for delta in deltas:
        shown += checker.push(delta)
        if checker.stopped:
            break
    return shown + checker.flush()


def test_stop_string_split_across_deltas_is_caught_and_dropped():
    checker = StopChecker(["<|im_end|>"])
    assert feed(checker, ["Hello", " there<|im", "_e", "nd|> and more"]) == "Hello there"
    assert checker.stopped


def test_partial_match_is_held_back_then_released():
    checker = StopChecker(["STOP"])
    assert checker.push("a ST") == "a "
    assert checker.push("ART") == "START"
    assert not checker.stopped
    assert checker.push("x ST") == "x "
    assert checker.flush() == "ST"


def test_earliest_of_several_stop_strings_wins():
    checker = StopChecker(["world", "lo"])
    assert checker.push("hello world") == "hel"
    assert checker.push("more") == ""


def test_no_stop_strings_passes_everything_through():
    checker = StopChecker()
    assert checker.push("abc") == "abc" and checker.flush() == ""


def test_stop_token_ids():
    checker = StopChecker(stop_token_ids=[2, 7])
    assert checker.is_stop_token(7) and not checker.is_stop_token(3)
