"""The one turn runner the TUI and the CLI share: it saves the user's message before anything runs,
drives the router, hands each event to the caller, checkpoints the reply through the store's
ReplyWriter, and records what left the machine and where the reply ran."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from app.errors import AppError
from app.feedback import FeedbackRecorder, label_recloud, learning_enabled, model_key
from engine.api import DEFAULT_MAX_TOKENS
from offload.events import Decision, Discard, Egress, Notice, RouterEvent, Token, TurnDone

if TYPE_CHECKING:  # the router, the engine and the store load when a turn first needs them
    from app.settings import UserSettings
    from app.store import Store
    from app.store.records import Conversation, Message
    from app.store.replies import ReplyWriter
    from engine.api import Engine
    from offload.privacy import ConversationPolicy, HistoryEntry
    from offload.router import Approver, Router, Turn
    from offload.verifier import VerifierClient

NEW_TITLE = "New conversation"

EventSink = Callable[[RouterEvent], object]
"""Called with each event of a turn as it happens; what it returns is ignored."""
RouterFactory = Callable[["Engine", "UserSettings", bool], "Router"]
"""(engine, settings, offline) -> the Router turns run through."""


class TurnError(AppError):
    """A turn failed (the local model or the cloud broke); the message says what and what to do.
    The user's message is kept and the reply is stored with status "error"."""


def title_from(text: str, limit: int = 48) -> str:
    """A conversation title from its first message: its first line, shortened at a word."""
    line = " ".join(text.strip().splitlines()[0].split()) if text.strip() else NEW_TITLE
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + "…"


@dataclass
class TurnResult:
    """What a turn produced, as the CLI prints it and the chat pane labels it."""

    reply: str = ""
    route: str = "local"
    model: str = ""
    provider: str = ""
    status: str = "complete"
    reason: str = ""
    confidence: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    ttft_ms: float | None = None
    tok_s: float | None = None
    notices: list[str] = field(default_factory=list)
    egress_bytes: int = 0
    message_id: int | None = None
    """The stored assistant message (for marking it good or not good enough)."""

    def observe(self, event: RouterEvent) -> None:
        if isinstance(event, Token):
            self.reply += event.text
            self.route = event.route
        elif isinstance(event, Discard):
            self.reply = ""
            self.notices.append(f"local draft withdrawn: {event.reason}")
        elif isinstance(event, Decision):
            self.route, self.reason = event.route, event.reason
            if event.confidence is not None:
                self.confidence = event.confidence
        elif isinstance(event, Notice):
            self.notices.append(event.text)
        elif isinstance(event, Egress):
            self.egress_bytes += event.bytes_sent
        elif isinstance(event, TurnDone):
            self.route, self.model, self.provider = event.route, event.model, event.provider
            self.status, self.reason = event.status, event.reason
            if event.confidence is not None:
                self.confidence = event.confidence
            self.tokens_in, self.tokens_out = event.tokens_in, event.tokens_out
            self.ttft_ms, self.tok_s = event.ttft_ms, event.tok_s


@dataclass(frozen=True)
class PendingTurn:
    """A turn whose message is saved and whose conversation is titled; TurnRunner.answer runs it."""

    conversation_id: int
    question_id: int
    turn: Turn
    """Its last message is the user's, the /cloud or /local prefix already read into `force`."""
    learning: bool
    """Whether the answer's signals are recorded (the setting, read when the turn opened)."""

    @property
    def content(self) -> str:
        """The user's message as stored and shown: without a /cloud or /local prefix."""
        return self.turn.messages[-1]["content"]


def open_turn(
    store: Store,
    conversation_id: int,
    text: str,
    *,
    force: Literal["local", "cloud"] | None = None,
    system: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> PendingTurn:
    """Save the user's message before anything runs and title a new conversation from it. The
    Turn reads a typed /cloud or /local (once); the message is saved, shown and titled without it."""
    from offload.privacy import HistoryEntry
    from offload.router import Turn

    conversation = store.get_conversation(conversation_id)
    stored = store.messages(conversation_id)
    earlier = _earlier(conversation, stored)
    turn = Turn(
        conversation_id=conversation_id,
        messages=[
            *([{"role": "system", "content": system}] if system else []),
            *({"role": e.role, "content": e.content} for e in earlier),
            {"role": "user", "content": text.strip()},
        ],
        history=[*([HistoryEntry("system", system)] if system else []), *earlier],
        policy=_policy(conversation),
        force=force,
        max_tokens=max_tokens,
    )
    content = turn.messages[-1]["content"]
    if not content:
        raise TurnError("The message is empty: type something after /cloud or /local.")
    if not stored and conversation.title == NEW_TITLE:
        store.update_conversation(conversation_id, title=title_from(content))
    learning = learning_enabled(store)
    if learning and turn.force == "cloud":
        label_recloud(store, conversation_id, content)
    question = store.add_message(conversation_id, "user", content)  # committed before generation starts
    return PendingTurn(conversation_id, question.id, turn, learning)


def _earlier(conversation: Conversation, stored: Sequence[Message]) -> list[HistoryEntry]:
    """The conversation before this turn's message as the router sees it (finished and
    interrupted messages, oldest first), each marked for the cloud-context policy."""
    from offload.privacy import HistoryEntry

    opted_in = conversation.cloud_opt_in_at
    return [
        HistoryEntry(m.role, m.content, refusal=m.refusal, before_opt_in=opted_in is None or m.created < opted_in)
        for m in stored
        if m.content and m.status in ("complete", "interrupted")
    ]


class TurnRunner:
    """Runs turns against one store and one router. Call run() from a worker thread: it blocks
    for the whole turn."""

    def __init__(self, store: Store, router: Router, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.store = store
        self.router = router
        self.max_tokens = max_tokens

    def run(
        self,
        conversation_id: int,
        text: str,
        *,
        approve: Approver | None = None,
        cancel: threading.Event | None = None,
        on_event: EventSink | None = None,
        force: Literal["local", "cloud"] | None = None,
        system: str | None = None,
    ) -> TurnResult:
        """Run one turn; `force` (the CLI's --local/--cloud) wins over a typed /local or /cloud.
        `system` (the CLI's --system) is a system prompt for this turn, put before the history."""
        pending = open_turn(self.store, conversation_id, text, force=force, system=system, max_tokens=self.max_tokens)
        return self.answer(pending, approve=approve, cancel=cancel, on_event=on_event)

    def answer(
        self,
        pending: PendingTurn,
        *,
        approve: Approver | None = None,
        cancel: threading.Event | None = None,
        on_event: EventSink | None = None,
    ) -> TurnResult:
        """Answer a turn opened by open_turn (its message already saved)."""
        conversation_id, turn = pending.conversation_id, pending.turn
        result = TurnResult()
        feedback, done = FeedbackRecorder(), None
        writer = self.store.begin_reply(conversation_id, parent_id=pending.question_id)
        route = ["local"]  # where the row says the reply comes from, kept true as the turn moves
        try:
            for event in self.router.run(turn, approve, cancel):
                result.observe(event)
                self._follow_route(writer, event, route)
                feedback.observe(event)
                done = event if isinstance(event, TurnDone) else done
                self._persist(conversation_id, writer, event)
                if on_event is not None:
                    on_event(event)
        except BaseException as error:
            interrupted = isinstance(error, KeyboardInterrupt)
            writer.finish(status="interrupted" if interrupted else "error")
            if isinstance(error, Exception):
                raise TurnError(_explain(error)) from error
            raise
        if pending.learning:
            feedback.finish(self.store, message_id=writer.message_id, conversation_id=conversation_id,
                            model=model_key(self.router), done=done, question=pending.content)
        result.message_id = writer.message_id
        return result

    @staticmethod
    def _follow_route(writer: ReplyWriter, event: RouterEvent, route: list[str]) -> None:
        """A reply the cloud took over is recorded as the cloud's at once, not at the end: one cut
        off by a crash must not come back labelled local."""
        if isinstance(event, Decision) and event.route == "cloud" and route[0] != "cloud":
            writer.retarget("cloud", event.model, event.provider)
            route[0] = "cloud"
        elif isinstance(event, Token) and event.route != route[0]:  # the cloud failed: local again
            writer.retarget(event.route, None, None)
            route[0] = event.route

    def _persist(self, conversation_id: int, writer: ReplyWriter, event: RouterEvent) -> None:
        if isinstance(event, Token):
            writer.append(event.text)
        elif isinstance(event, Discard):
            writer.discard()
        elif isinstance(event, Egress):
            self.store.record_egress(event, conversation_id=conversation_id)
        elif isinstance(event, TurnDone):
            writer.finish(
                status=event.status,
                route=event.route,
                model=event.model,
                provider=event.provider,
                confidence=event.confidence,
                escalation_reason=event.reason,
                tokens_in=event.tokens_in,
                tokens_out=event.tokens_out,
                ttft_ms=event.ttft_ms,
                tok_s=event.tok_s,
                refusal=event.refusal,
            )


def _policy(conversation: Conversation) -> ConversationPolicy:
    from offload.privacy import ConversationPolicy

    return ConversationPolicy(
        cloud_opt_in=bool(conversation.cloud_opt_in),
        local_only=bool(conversation.local_only),
        context=conversation.cloud_context,
    )


def _explain(error: Exception) -> str:
    """The engine's and offload's errors already speak to the user; anything else (a store
    error included, as before) gets its type named."""
    from engine.errors import EngineError
    from offload.errors import OffloadError

    if isinstance(error, (EngineError, OffloadError)):
        return str(error)
    return f"the turn failed ({type(error).__name__}: {error}); your message is saved, try again."


def default_router_factory(engine: Engine, settings: UserSettings, offline: bool) -> Router:
    """The Router for these settings. Callers keep it while the engine and settings stay the same
    (it holds each conversation's redaction placeholders); the cloud provider opens, and reads its
    key, when a turn first needs it."""
    from app.cloud_provider import DeferredProvider
    from offload.confidence import EscalationThreshold
    from offload.network import NETWORK
    from offload.router import Router

    from app.model_calibration import calibration_for
    from app.settings import UserSettings

    cloud = settings.active_provider()
    model = getattr(getattr(engine, "info", None), "model_id", None)  # the user's override is keyed by it
    provider = DeferredProvider(cloud.kind, cloud.name, cloud.base_url, NETWORK, cloud.timeouts()) if cloud else None
    # The setting left at its default defers to the threshold fitted for the model, where there is one.
    own = settings.escalate_below != UserSettings.escalate_below
    return Router(
        engine,
        settings.privacy(offline),
        provider,
        NETWORK,
        cloud_model=cloud.model if cloud else None,
        threshold=EscalationThreshold(risk=1.0 - settings.escalate_below) if own else None,
        calibration=calibration_for(engine, settings.model_dir, settings.backend),
        sampling=settings.sampling_for(model).request_fields() if model else None,
        verifier=_verifier(settings),
    )


def _verifier(settings: UserSettings) -> VerifierClient | None:
    """The hybrid route's verifier client, when settings name one (its key read now, like a provider's)."""
    chosen = settings.verifier_provider() if hasattr(settings, "verifier_provider") else None
    if chosen is None:
        return None
    from offload.network import NETWORK
    from offload.providers import _key_if_readable
    from offload.verifier import VerifierClient

    return VerifierClient(chosen.base_url, _key_if_readable(chosen.name), model=chosen.model, network=NETWORK, name=chosen.name)
