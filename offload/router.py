"""The router: every turn starts local; it escalates only when local falls short and privacy allows.

It takes a Turn and yields RouterEvents. It never touches the history store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from engine.api import Engine, FinishEvent, GenerationRequest, Message, TokenEvent
from offload.events import Decision, RouterEvent, Token, TurnDone
from offload.privacy import ConversationPolicy, PrivacySettings


@dataclass(frozen=True)
class Turn:
    conversation_id: int
    messages: Sequence[Message]
    policy: ConversationPolicy = field(default_factory=ConversationPolicy)
    force: Literal["local", "cloud"] | None = None
    max_tokens: int = 256


@dataclass(frozen=True)
class Preview:
    """Exactly what would leave, and where, for the user to approve in ask mode."""

    provider: str
    host: str
    payload: str


Approver = Callable[[Preview], bool]


class Router:
    def __init__(self, engine: Engine, settings: PrivacySettings) -> None:
        self.engine = engine
        self.settings = settings

    def run(
        self,
        turn: Turn,
        approve: Approver | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[RouterEvent]:
        yield Decision(route="local", reason="every turn starts local")
        request = GenerationRequest(messages=list(turn.messages), max_tokens=turn.max_tokens)
        finish: FinishEvent | None = None
        for event in self.engine.generate(request, cancel=cancel):
            if isinstance(event, TokenEvent):
                yield Token(text=event.text, route="local", logprob=event.logprob)
            else:
                finish = event
        assert finish is not None, "an engine must end every generation with a FinishEvent"
        info = self.engine.info
        yield TurnDone(
            route="local",
            model=info.model_id,
            provider=info.backend,
            status="interrupted" if finish.reason == "cancelled" else "complete",
            reason="answered locally",
            tokens_in=finish.usage.prompt_tokens,
            tokens_out=finish.usage.completion_tokens,
            ttft_ms=finish.timings.ttft_ms,
            tok_s=finish.timings.decode_tok_s,
        )
