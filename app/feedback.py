"""Learning from use: keeps the router's signals of each local answer and labels them good or not
good enough (a key in the chat, a /cloud re-ask, agreement of a complete local draft with the
cloud's answer). Only while the "learn from use" setting is on; nothing of it leaves the machine."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from offload.events import Decision, Discard, RouterEvent, Token, TurnDone

LEARN_SETTING = "app.learn_from_use"
"""The settings-table key of UserSettings.learn_from_use (off by default)."""
AGREEMENT = 0.6
"""Word-set overlap (Jaccard) at which a local draft counts as agreeing with the cloud's answer."""


def learning_enabled(store: Any) -> bool:
    return bool(store.get_setting(LEARN_SETTING, False))


def model_key(router: Any) -> str:
    """The identity the router's calibration is keyed by (model and quantization)."""
    from offload.calibrations import ModelIdentity

    active = getattr(router, "active", None)
    identity = getattr(active, "identity", None) or ModelIdentity.of(router.engine.info)
    return identity.key


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return re.findall(r"[0-9a-z]+(?:\.[0-9]+)?", text)


def agrees(draft: str, reference: str, question: str = "") -> bool:
    """A normalised match of what each answer adds to the question: one contains the other, or
    their words mostly overlap ("the capital of France is Lyon" and "... is Paris" differ)."""
    asked = set(_words(question))
    a = [w for w in _words(draft) if w not in asked]
    b = [w for w in _words(reference) if w not in asked]
    if not a or not b:
        return False
    joined_a, joined_b = f" {' '.join(a)} ", f" {' '.join(b)} "
    if joined_a in joined_b or joined_b in joined_a:
        return True
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) >= AGREEMENT


def same_question(a: str, b: str) -> bool:
    return agrees(a, b)


class FeedbackRecorder:
    """Watches one turn's events; at its end, keeps the local answer's signals (and a label when
    the turn itself gives one)."""

    def __init__(self) -> None:
        self.features: Mapping[str, float] | None = None
        self.confidence: float | None = None
        self.draft_complete = False
        self.local_text = ""
        self.draft_text = ""
        self.text = ""

    def observe(self, event: RouterEvent) -> None:
        if isinstance(event, Decision) and event.features:
            self.features, self.confidence = event.features, event.confidence
            self.draft_complete = event.draft_complete
        elif isinstance(event, Token):
            self.text += event.text
        elif isinstance(event, Discard):
            self.draft_text, self.text = self.text, ""

    def finish(self, store: Any, *, message_id: int, conversation_id: int, model: str, done: TurnDone | None,
               question: str = "") -> None:
        if done is None or done.status != "complete" or self.features is None:
            return
        row = dict(message_id=message_id, conversation_id=conversation_id, model=model,
                   features=dict(self.features), confidence=self.confidence)
        if done.route == "local":
            store.record_feedback(**row, answer=self.text)
        elif self.draft_complete and self.draft_text:
            # The cloud answered after a complete local draft: no extra request, just a comparison.
            store.record_feedback(**row, answer=self.draft_text, good=agrees(self.draft_text, self.text, question),
                                  source="agreement")


def label_recloud(store: Any, conversation_id: int, question: str) -> None:
    """The user re-asks with /cloud right after a local answer: that answer was not good enough."""
    history = store.messages(conversation_id)
    if len(history) < 2:
        return
    previous_question, previous_answer = history[-2], history[-1]
    if (previous_answer.role == "assistant" and previous_answer.route == "local"
            and previous_answer.status == "complete" and previous_question.role == "user"
            and same_question(previous_question.content, question)):
        store.label_reply(previous_answer.id, False, "recloud")


LAST_FIT_SETTING = "router.last_fit"
"""What `tandem models calibrate` measured last: {model, heldout_auroc, n_fit, history_labels, created}."""


def summary(store: Any) -> str:
    """For the settings screen: the labels kept, and what the last fit measured."""
    counts = store.feedback_counts()
    text = (f"{counts['good'] + counts['not_good']} labelled answers ({counts['good']} good, "
            f"{counts['not_good']} not good enough) of {counts['answers']} kept.")
    fit = store.get_setting(LAST_FIT_SETTING)
    if isinstance(fit, dict):
        auroc = fit.get("heldout_auroc")
        text += (f" Last fit: {fit.get('model')}, held-out AUROC {auroc if auroc is not None else 'n/a'}, "
                 f"{fit.get('n_fit')} examples with {fit.get('history_labels', 0)} from history ({fit.get('created', '')[:10]}).")
    else:
        text += " No fit yet: run `tandem models calibrate NAME --from-history`."
    return text
