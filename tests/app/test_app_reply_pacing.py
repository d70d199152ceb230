"""The streamed reply's pacing (app/tui/reply_pacing.py): the worker wakes the screen once for
all it queues until the screen takes them; tokens in a row arrive joined, other events keep their
place; the screen is told to wait out the rest of a frame."""

from __future__ import annotations

from app.tui.reply_pacing import PacedEvents
from offload.events import Decision, Discard, Notice, Token


def test_events_queued_before_a_take_wake_the_screen_once_and_keep_their_order():
    wakes: list[int] = []
    paced = PacedEvents(lambda: wakes.append(1))
    for event in (Token("Hel", "local"), Token("lo", "local"), Discard("low confidence"), Token("Hi", "cloud"),
                  Token("!", "cloud"), Notice("note"), Token(" there", "cloud")):
        paced.push(event)
    assert len(wakes) == 1
    taken = paced.take()
    assert [type(e).__name__ for e in taken] == ["Token", "Discard", "Token", "Notice", "Token"]
    assert [e.text for e in taken if isinstance(e, Token)] == ["Hello", "Hi!", " there"]
    assert paced.take() == []
    paced.push(Token("again", "local"))  # after a take, the next event wakes the screen again
    assert len(wakes) == 2


def test_tokens_of_different_routes_are_not_joined():
    paced = PacedEvents(lambda: None)
    paced.push(Token("draft", "local"))
    paced.push(Token("answer", "hybrid"))
    assert [(e.text, e.route) for e in paced.take() if isinstance(e, Token)] == [("draft", "local"), ("answer", "hybrid")]


def test_the_screen_waits_out_the_rest_of_a_frame_after_a_take_that_brought_text():
    paced = PacedEvents(lambda: None, frames_per_s=10)
    assert paced.wait_s() == 0.0  # nothing taken yet: show the first token at once
    paced.push(Decision("local", "confident", 0.9, {}))
    paced.take()
    assert paced.wait_s() == 0.0  # the route's label is no frame: the first token still shows at once
    paced.push(Token("Hi", "local"))
    paced.take()
    assert 0.05 < paced.wait_s() <= 0.1
