"""The router: every turn starts local; it escalates only when local falls short and privacy allows.

Per turn: the privacy gate, the capability rules (context window, /cloud or /local, declared
skills), local generation watched by a streaming monitor, the calibrated score, keep or escalate.
It takes a Turn and yields RouterEvents. It never touches the history store.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from engine.api import Engine, FinishEvent, GenerationRequest, Message, TokenEvent
from engine.errors import ContextWindowExceeded
from offload.confidence import (
    Assessment,
    Calibration,
    EscalationThreshold,
    StreamMonitor,
    assess,
)
from offload.events import Decision, Discard, Egress, Notice, RouterEvent, Token, TurnDone
from offload.privacy import ConversationPolicy, PrivacySettings, Verdict, cloud_context, may_leave
from offload.redaction import Redactor

if TYPE_CHECKING:
    from offload.network import Network
    from offload.providers.base import Exchange, Provider
    from offload.verifier import VerifierClient


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


_FORCE_PREFIX = re.compile(r"^\s*/(cloud|local)\b\s*", re.IGNORECASE)
LOW_CONFIDENCE = 0.0
"""What a turn that should have escalated but could not reports as its confidence floor."""


def split_force_prefix(text: str) -> tuple[Literal["local", "cloud"] | None, str]:
    """`/cloud how do I ...` -> ("cloud", "how do I ..."); other text is returned unchanged."""
    match = _FORCE_PREFIX.match(text)
    if not match:
        return None, text
    return match.group(1).lower(), text[match.end() :]  # type: ignore[return-value]


# What a request needs, recognised cheaply, and the skill names that cover it.
_NEEDS: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = (
    ("writing or reading code", re.compile(r"```|\bdef \w+\(|#include\b|\bSELECT\b.+\bFROM\b", re.S),
     ("code", "coding", "programming")),
    ("translation", re.compile(r"\btranslat(e|ion)\b", re.I), ("translation", "multilingual")),
    ("a long document", re.compile(r"(?s).{4000,}"), ("long-context", "summarization", "summarisation")),
)


def outside_skills(text: str, skills_json: str | None) -> str | None:
    """The need a request has that the local model's declared skills do not cover, or None.
    Without a declared skill list the model is trusted and its confidence decides."""
    if not skills_json:
        return None
    try:
        declared = json.loads(skills_json)
    except json.JSONDecodeError:
        return None
    if not isinstance(declared, list):
        return None
    names = " ".join(
        (s if isinstance(s, str) else str(s.get("name", ""))) for s in declared
    ).casefold()
    for need, pattern, covering in _NEEDS:
        if pattern.search(text) and not any(skill in names for skill in covering):
            return need
    return None


@dataclass
class _LocalDraft:
    tokens: list[TokenEvent] = field(default_factory=list)
    finish: FinishEvent | None = None
    aborted: str | None = None
    prompt_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)


class Router:
    def __init__(
        self,
        engine: Engine,
        settings: PrivacySettings,
        provider: Provider | None = None,
        network: Network | None = None,
        *,
        cloud_model: str | None = None,
        cloud_temperature: float = 0.7,
        threshold: EscalationThreshold | None = None,
        calibration: Calibration | None = None,
        verifier: VerifierClient | None = None,
    ) -> None:
        """verifier: a vLLM or `tandem serve` endpoint that checks the local model's drafts
        (the hybrid route); it is bound by the same privacy gate as the cloud."""
        if provider is not None and not cloud_model:
            raise ValueError(
                f"Router got the provider {provider.name!r} but no cloud_model: "
                "pass the model to ask there, e.g. cloud_model='gpt-4o-mini'."
            )
        self.engine = engine
        self.settings = settings
        self.provider = provider
        self.network = network
        self.cloud_model = cloud_model or ""
        self.cloud_temperature = cloud_temperature
        self.threshold = threshold or EscalationThreshold()
        self.calibration = calibration or Calibration.load()
        self._redactors: dict[int, Redactor] = {}
        self.verifier = verifier
        from offload.hybrid import HybridTotals

        self.hybrid_totals = HybridTotals()
        """Hybrid turns so far, for the settings screen: acceptance and verifier passes saved."""

    def redactor_for(self, conversation_id: int) -> Redactor:
        """One mapping per conversation, so placeholders stay stable across its turns."""
        redactor = self._redactors.get(conversation_id)
        if redactor is None:
            redactor = self._redactors[conversation_id] = Redactor(self.settings.terms)
        return redactor

    def verdict(self, policy: ConversationPolicy) -> Verdict:
        """The privacy gate for this turn: every cloud send is conditioned on it."""
        if self.provider is None:
            return Verdict(False, "no cloud provider is set up")
        # check() re-probes a cloud that failed before, so one bad connect does not lock it out.
        online = True if self.network is None else self.network.check().online
        return may_leave(self.settings, policy, online)

    def run(
        self,
        turn: Turn,
        approve: Approver | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[RouterEvent]:
        cancel = cancel or threading.Event()
        force, messages = self._strip_force(turn)
        if self.verifier is not None and force is None:
            from offload.hybrid_route import run_hybrid

            handled = yield from run_hybrid(self, turn, messages, approve, cancel)
            if handled:
                return
        verdict = self.verdict(turn.policy)
        can_escalate = verdict.allowed and force != "local"
        yield Decision(route="local", reason="every turn starts local")

        need, prompt_tokens = self._capability_shortfall(messages, force)
        if need and can_escalate:
            yield from self._escalate(turn, messages, need, verdict, approve, cancel, None, {})
            return
        if force == "cloud":
            yield Notice(f"You asked for the cloud, but {verdict.reason}; answering locally.")
            need = None  # the local answer is judged on its own merits
        elif need:
            yield Notice(f"This turn needs the cloud ({need}), but {verdict.reason}; answering locally.")

        draft = yield from self._generate_local(turn, messages, cancel, monitored=can_escalate)
        if draft is None:
            return
        draft.prompt_tokens = draft.prompt_tokens or prompt_tokens
        if draft.finish is not None and draft.finish.reason == "cancelled":
            yield self._local_done(draft, "interrupted", "cancelled", None)
            return
        assessment = assess(draft.tokens, self.engine.info.extra.get("refusal"),
                            self.calibration, draft.prompt_tokens)
        shortfall = need or self._confidence_shortfall(draft, assessment)
        if shortfall is None:
            reason = "forced local (/local)" if force == "local" else "the local model is confident"
            yield Decision("local", reason, assessment.confidence, assessment.features)
            yield self._local_done(draft, "complete", reason, assessment.confidence)
            return
        if not can_escalate:
            reason = f"kept local: {shortfall}, but {verdict.reason}"
            yield Decision("local", reason, assessment.confidence, assessment.features)
            yield self._local_done(draft, "complete", reason, min(assessment.confidence, 0.5))
            return
        yield from self._escalate(
            turn, messages, shortfall, verdict, approve, cancel, draft, assessment.features,
            assessment.confidence,
        )

    # -- the capability rules -------------------------------------------------------------

    def _strip_force(self, turn: Turn) -> tuple[str | None, list[dict[str, str]]]:
        messages = [dict(m) for m in turn.messages]
        force: str | None = turn.force
        if messages and messages[-1].get("role") == "user":
            prefix, rest = split_force_prefix(messages[-1]["content"])
            if prefix:
                force = prefix
                messages[-1]["content"] = rest
        return force, messages

    def _capability_shortfall(
        self, messages: Sequence[Message], force: str | None
    ) -> tuple[str | None, int]:
        """Why this turn should not even try locally (or None), and its prompt's token count."""
        if force == "local":
            return None, 0
        if force == "cloud":
            return "you asked for the cloud (/cloud)", 0
        window = self.engine.info.context_window
        try:
            prompt_tokens = self.engine.count_prompt_tokens(messages)
        except ContextWindowExceeded as error:
            prompt_tokens = error.prompt_tokens
        if prompt_tokens >= window:
            return f"the prompt ({prompt_tokens} tokens) is over the local context window ({window})", prompt_tokens
        need = outside_skills(messages[-1]["content"] if messages else "",
                              self.engine.info.extra.get("skills"))
        return (f"it needs {need}, outside the local model's skills" if need else None), prompt_tokens

    def _confidence_shortfall(self, draft: _LocalDraft, assessment: Assessment) -> str | None:
        if draft.aborted:
            return draft.aborted
        if assessment.refused:
            return "the local model says this needs a bigger model"
        cutoff = self.threshold.cutoff(self.calibration)
        if assessment.confidence < cutoff:
            return f"low confidence ({assessment.confidence:.2f} < {cutoff:.2f})"
        return None

    # -- the local leg --------------------------------------------------------------------

    def _generate_local(
        self, turn: Turn, messages: Sequence[Message], cancel: threading.Event, monitored: bool
    ) -> Iterator[RouterEvent]:
        """Stream the local answer; returns the draft, or None when the prompt cannot run here."""
        draft = _LocalDraft()
        monitor = StreamMonitor(self.engine.info.extra.get("refusal")) if monitored else None
        request = GenerationRequest(messages=list(messages), max_tokens=turn.max_tokens)
        try:
            stream = self.engine.generate(request, cancel=cancel)
            for event in stream:
                if isinstance(event, FinishEvent):
                    draft.finish = event
                    continue
                draft.tokens.append(event)
                yield Token(text=event.text, route="local", logprob=event.logprob)
                draft.aborted = monitor.observe(event) if monitor else None
                if draft.aborted:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()  # stop the engine's decode loop now, not at max_tokens
                    break
        except ContextWindowExceeded as error:
            yield Notice(str(error))
            yield TurnDone("local", self.engine.info.model_id, self.engine.info.backend, "error",
                           reason="the prompt does not fit the local model and the cloud is not allowed",
                           confidence=LOW_CONFIDENCE, tokens_in=error.prompt_tokens)
            return None
        if draft.finish is not None:
            draft.prompt_tokens = draft.finish.usage.prompt_tokens
        return draft

    def _local_done(
        self, draft: _LocalDraft, status: Literal["complete", "interrupted", "error"],
        reason: str, confidence: float | None,
    ) -> TurnDone:
        info = self.engine.info
        finish = draft.finish
        return TurnDone(
            route="local", model=info.model_id, provider=info.backend, status=status,
            reason=reason, confidence=confidence,
            tokens_in=finish.usage.prompt_tokens if finish else draft.prompt_tokens,
            tokens_out=finish.usage.completion_tokens if finish else len(draft.tokens),
            ttft_ms=finish.timings.ttft_ms if finish else None,
            tok_s=finish.timings.decode_tok_s if finish else None,
        )

    def _fall_back_local(
        self, turn: Turn, messages: Sequence[Message], cancel: threading.Event,
        draft: _LocalDraft | None, reason: str, confidence: float | None, on_screen: bool,
    ) -> Iterator[RouterEvent]:
        """The local answer stays: shown again if it was withdrawn, generated in full if it was
        cut short or never made."""
        if draft is not None and draft.aborted is None and draft.finish is not None:
            if not on_screen:
                yield Token(text=draft.text, route="local")
        else:
            if draft is not None and draft.tokens and on_screen:
                yield Discard("the local draft was cut short; answering again in full")
            draft = yield from self._generate_local(turn, messages, cancel, monitored=False)
            if draft is None:
                return
        yield self._local_done(draft, "complete", reason, confidence)

    # -- the cloud leg --------------------------------------------------------------------

    def _escalate(
        self, turn: Turn, messages: Sequence[Message], why: str, verdict: Verdict,
        approve: Approver | None, cancel: threading.Event, draft: _LocalDraft | None,
        features: Mapping[str, float], confidence: float | None = None,
    ) -> Iterator[RouterEvent]:
        from offload.errors import ProviderError
        from offload.providers.base import StreamEnd

        provider = self.provider
        assert provider is not None and verdict.allowed, "escalation is decided by the gate only"
        outgoing = cloud_context(messages, self.settings.context_turns)
        redactor = self.redactor_for(turn.conversation_id) if self.settings.redact else None
        if redactor is not None:
            outgoing = redactor.redact_messages(outgoing)
        model, temperature = self.cloud_model, self.cloud_temperature
        payload = provider.payload(outgoing, model, turn.max_tokens, temperature)

        if verdict.needs_approval:
            approved = approve is not None and approve(Preview(provider.name, provider.host, payload))
            if not approved:
                reason = f"kept local: {why}; you declined sending it to {provider.host}"
                yield Notice(f"Not sent to {provider.host}: you declined. The local answer stays.")
                yield Decision("local", reason, confidence, dict(features))
                low = LOW_CONFIDENCE if confidence is None else min(confidence, 0.5)
                yield from self._fall_back_local(turn, messages, cancel, draft, reason, low,
                                                 on_screen=True)
                return

        if draft is not None and draft.tokens:
            yield Discard(f"escalating to {provider.name}: {why}")
        yield Decision("cloud", f"escalated: {why}", confidence, dict(features))
        restorer = redactor.streaming_restorer() if redactor else None
        streamed = False
        end: StreamEnd | None = None
        try:
            for event in provider.stream_chat(outgoing, model, turn.max_tokens, temperature, cancel):
                if isinstance(event, StreamEnd):
                    end = event
                    continue
                shown = restorer.feed(event.text) if restorer else event.text
                if shown:
                    streamed = True
                    yield Token(text=shown, route="cloud")
            tail = restorer.flush() if restorer else ""
            if tail:
                yield Token(text=tail, route="cloud")
        except ProviderError as error:
            if error.exchange is not None:
                yield self._egress(error.exchange, redactor)
            yield Notice(f"The cloud failed: {error} Showing the local answer.")
            if streamed:
                yield Discard("the cloud reply broke off")
            reason = f"kept local: {why}, but the cloud failed"
            low = LOW_CONFIDENCE if confidence is None else min(confidence, 0.5)
            yield from self._fall_back_local(turn, messages, cancel, draft, reason, low,
                                             on_screen=False)
            return
        assert end is not None, "a provider ends every call that did not raise with a StreamEnd"
        yield self._egress(end.exchange, redactor)
        usage = end.usage
        yield TurnDone(
            route="cloud", model=end.model, provider=provider.name,
            status="interrupted" if end.finish_reason == "cancelled" else "complete",
            reason=f"escalated: {why}", confidence=confidence,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
        )

    @staticmethod
    def _egress(exchange: Exchange, redactor: Redactor | None) -> Egress:
        """The ledger's record, from what the provider measured on the wire."""
        return Egress(
            provider=exchange.provider, host=exchange.host, payload=exchange.payload,
            bytes_sent=exchange.bytes_sent, bytes_received=exchange.bytes_received,
            redactions=redactor.kinds_in(exchange.payload) if redactor else {},
        )
