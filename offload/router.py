"""The router: every turn starts local; it escalates only when local falls short and privacy allows.

Per turn: the privacy gate, the capability rules (context window, /cloud or /local, declared
skills), local generation watched by a streaming monitor, the calibrated score, keep or escalate.
It takes a Turn and yields RouterEvents. It never touches the history store.
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from engine.api import DEFAULT_MAX_TOKENS, Engine, FinishEvent, GenerationRequest, Message, TokenEvent
from engine.errors import ContextWindowExceeded
from offload.calibrations import ActiveCalibration
from offload.confidence import (
    Assessment,
    Calibration,
    EscalationThreshold,
    StreamMonitor,
    answer_confidence,
    assess,
    is_refusal,
)
from offload.errors import OffloadError
from offload.events import Decision, Discard, Egress, Notice, RouterEvent, Token, TurnDone
from offload.outgoing import CarriesRequest, Exchange, OutgoingRequest
from offload.privacy import (
    CloudShare,
    ConversationPolicy,
    HistoryEntry,
    PrivacySettings,
    Verdict,
    cloud_share,
    describe_context,
    may_leave,
)
from offload.redaction import Redactor

if TYPE_CHECKING:
    from offload.network import Network
    from offload.providers.base import Provider
    from offload.verifier import VerifierClient


@dataclass(frozen=True)
class Turn:
    """One turn for the router. A /cloud or /local typed at the start of the last (user) message
    is read here, once: it becomes `force` (unless the caller forced a route already) and leaves
    the message, so what is stored, shown, titled and sent never carries it."""

    conversation_id: int
    messages: Sequence[Message]
    policy: ConversationPolicy = field(default_factory=ConversationPolicy)
    force: Literal["local", "cloud"] | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    history: Sequence[HistoryEntry] | None = None
    """The earlier messages (all of `messages` but the last) with what the cloud-context policy
    must know about each (a local refusal, written before the opt-in); None: derived from
    `messages`, nothing marked."""

    def __post_init__(self) -> None:
        if not self.messages or self.messages[-1].get("role") != "user":
            return
        *earlier, last = self.messages
        typed, content = _read_force_prefix(last["content"])
        if typed is not None:
            object.__setattr__(self, "messages", [*earlier, {**last, "content": content}])
            object.__setattr__(self, "force", self.force or typed)


@dataclass(frozen=True)
class Preview(CarriesRequest):
    """What would leave, and where, for the user to approve in ask mode: the very request the
    provider sends if the user agrees (and the same message sent alone, when it carries others)."""

    request: OutgoingRequest
    context: str = ""
    """The cloud-context policy in words, e.g. "last 2 exchanges"."""
    held_before_opt_in: int = 0
    """Earlier messages the policy would send but that predate the conversation's opt-in."""
    alone: OutgoingRequest | None = None
    """The request with the new message alone (no earlier turns); None when there are none."""

    @property
    def alone_payload(self) -> str | None:
        return self.alone.body if self.alone is not None else None

    @property
    def earlier(self) -> tuple[str, ...]:
        """The earlier messages the request carries, one line each ("user: ...")."""
        return tuple(
            f"{m['role']}: {_one_line(m['content'])}"
            for m in list(self.request.messages)[:-1] if m["role"] != "system"
        )


class Approval(enum.Enum):
    """The user's answer to a Preview. An approver may also answer True (SEND) or False."""

    SEND = "send"
    SEND_ALONE = "alone"
    """Send the new message without the earlier turns."""
    KEEP_LOCAL = "keep"


Approver = Callable[[Preview], "bool | Approval"]
"""Answers SEND (or True), SEND_ALONE, or KEEP_LOCAL (or False: the user declining). An approver
that cannot ask at all (no terminal) raises ApprovalUnavailable instead, so nobody is told they
declined."""


class ApprovalUnavailable(OffloadError):
    """The approver could not put the question to the user; the message says why and what to do."""


_FORCE_PREFIX = re.compile(r"^\s*/(cloud|local)\b\s*", re.IGNORECASE)
LOW_CONFIDENCE = 0.0
"""What a turn that should have escalated but could not reports as its confidence floor."""
KEPT_LOCAL_CEILING = 0.5
"""The most confidence a reply reports when it stays local against the router's judgement (the
gate, the user or a failed cloud kept it here): the label must not read as a confident answer."""


def kept_local_confidence(confidence: float | None) -> float:
    """The confidence of a reply kept local though the router judged it should escalate."""
    return LOW_CONFIDENCE if confidence is None else min(confidence, KEPT_LOCAL_CEILING)


def _read_force_prefix(text: str) -> tuple[Literal["local", "cloud"] | None, str]:
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


def outside_skills(text: str, skills: Sequence[str] | None) -> str | None:
    """The need a request has that the local model's declared skills (EngineInfo.skills) do not
    cover, or None. Without a declared skill list the model is trusted and its confidence decides."""
    if skills is None:
        return None
    names = " ".join(skills).casefold()
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
    unfit: bool = False
    """The prompt did not fit the local model: nothing was generated and the turn has ended."""

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)


@dataclass
class _LocalPrompt:
    """The messages the local model is given: the conversation, less its oldest turns when it is
    longer than the local context window (system messages and the new message always stay)."""

    messages: list[Message]
    dropped: int = 0
    window: int = 0
    noted: bool = False
    """Whether the reply has said that turns were left out (it says so once)."""


@dataclass(frozen=True)
class _Escalation:
    """One turn's way to the cloud: what goes and why, the gate's verdict, and what stays if it
    does not go (the local prompt, and the draft with its score when one was made)."""

    turn: Turn
    messages: Sequence[Message]
    """What the cloud is sent (before the context policy and redaction)."""
    why: str
    verdict: Verdict
    local: _LocalPrompt
    """What a local fallback answers from."""
    draft: _LocalDraft | None = None
    features: Mapping[str, float] = field(default_factory=dict)
    confidence: float | None = None


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
        calibration: Calibration | ActiveCalibration | None = None,
        sampling: Mapping[str, float | int] | None = None,
        verifier: VerifierClient | None = None,
    ) -> None:
        """`calibration`: the model's own (offload.calibrations.resolve), or a bare Calibration
        taken as fitted for it; None is the shipped fit of the embedded model. `threshold`:
        None uses the calibration's stored cutoff where it has one, else EscalationThreshold().
        `sampling`: the user's override of the local model's sampling settings (GenerationRequest
        field names); what it leaves out, the model decides from its own settings. `verifier`: a
        vLLM or `tandem serve` endpoint that checks the local model's drafts (the hybrid route);
        it is bound by the same privacy gate as the cloud."""
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
        if calibration is None:
            calibration = Calibration.load()
        if isinstance(calibration, Calibration):
            calibration = ActiveCalibration(calibration, calibrated=True)
        self.active = calibration
        self.calibration = calibration.calibration
        self._own_threshold = threshold is not None
        self.threshold = threshold or EscalationThreshold()
        self.sampling: dict[str, Any] = dict(sampling or {})  # GenerationRequest sampling fields, by name
        self._notice_pending = calibration.notice
        self._redactors: dict[int, Redactor] = {}
        self.verifier = verifier
        from offload.hybrid import HybridTotals

        self.hybrid_totals = HybridTotals()
        """Hybrid turns so far, for the settings screen: acceptance and verifier passes saved."""

    @property
    def cutoff(self) -> float:
        """Escalate below this confidence: the caller's threshold, else the calibration's own."""
        if not self._own_threshold and self.active.cutoff is not None:
            return self.active.cutoff
        return self.threshold.cutoff(self.calibration)

    def _tag(self, reason: str) -> str:
        """A reason with the calibration's standing, so the reply's label says "uncalibrated"."""
        return reason if self.active.calibrated else f"{reason} (uncalibrated)"

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
        force, messages = turn.force, [dict(m) for m in turn.messages]
        if self.verifier is not None and force is None:
            from offload.hybrid_route import run_hybrid

            handled = False  # the hybrid route answered: it ended the turn with a TurnDone
            for event in run_hybrid(self, turn, messages, approve, cancel):
                handled = handled or isinstance(event, TurnDone)
                yield event
            if handled:
                return
        verdict = self.verdict(turn.policy)
        can_escalate = verdict.allowed and force != "local"
        yield Decision(route="local", reason="every turn starts local")
        if self._notice_pending:
            yield Notice(self._notice_pending)  # once per router: the model and its fit are fixed
            self._notice_pending = None

        need, prompt_tokens = self._capability_shortfall(messages, force)
        local = self._fit_local_window(messages, turn.max_tokens)
        if need and can_escalate:
            yield from self._escalate(_Escalation(turn, messages, need, verdict, local), approve, cancel)
            return
        if force == "cloud":
            yield Notice(f"You asked for the cloud, but {verdict.reason}; answering locally.")
            need = None  # the local answer is judged on its own merits
        elif need and local.dropped and prompt_tokens >= self.engine.info.context_window:
            need = None  # too long for the window: the oldest turns are left out instead
        elif need:
            yield Notice(f"This turn needs the cloud ({need}), but {verdict.reason}; answering locally.")

        draft = _LocalDraft()
        yield from self._generate_local(turn, local, cancel, draft, monitored=can_escalate)
        if draft.unfit:
            return
        draft.prompt_tokens = draft.prompt_tokens or prompt_tokens
        if draft.finish is not None and draft.finish.reason == "cancelled":
            yield self._local_done(draft, "interrupted", "cancelled", None)
            return
        question = messages[-1]["content"] if messages else ""
        truncated = draft.finish is not None and draft.finish.reason == "length"
        assessment = assess(draft.tokens, self.engine.info.refusal, self.calibration,
                            draft.prompt_tokens, prompt=question, truncated=truncated,
                            hidden=draft.finish.hidden if draft.finish is not None else None)
        if can_escalate and need is None and draft.aborted is None:
            assessment = self._with_samples(assessment, local.messages, draft, question)
        shortfall = need or self._confidence_shortfall(draft, assessment)
        if shortfall is None:
            reason = "forced local (/local)" if force == "local" else self._tag("the local model is confident")
            yield Decision("local", reason, assessment.confidence, assessment.features,
                           draft_complete=draft.aborted is None)
            yield self._local_done(draft, "complete", reason, assessment.confidence)
            return
        if not can_escalate:
            # Asked for local: the privacy gate is not why it stayed, so don't blame it.
            reason = (f"forced local (/local), though {shortfall}" if force == "local"
                      else f"kept local: {shortfall}, but {verdict.reason}")
            yield Decision("local", reason, assessment.confidence, assessment.features)
            yield self._local_done(draft, "complete", reason, kept_local_confidence(assessment.confidence))
            return
        leg = _Escalation(turn, messages, shortfall, verdict, local, draft, assessment.features, assessment.confidence)
        yield from self._escalate(leg, approve, cancel)

    # -- the capability rules -------------------------------------------------------------

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
                              self.engine.info.skills)
        return (f"it needs {need}, outside the local model's skills" if need else None), prompt_tokens

    def _fit_local_window(self, messages: Sequence[Message], max_tokens: int) -> _LocalPrompt:
        """The conversation as the local model can take it: when the prompt leaves too little of
        the window for the reply, the oldest exchanges go (whole, from the oldest user message);
        system messages and the new message stay."""
        window = self.engine.info.context_window
        budget = window - min(max_tokens, window // 2)  # room for at least a short reply
        full: list[Message] = [dict(m) for m in messages]
        if not full or self._count(full) <= budget:
            return _LocalPrompt(full, window=window)
        *earlier, current = full
        system = [m for m in earlier if m.get("role") == "system"]
        dialogue = [m for m in earlier if m.get("role") != "system"]
        starts = [i for i, m in enumerate(dialogue) if m.get("role") == "user"] + [len(dialogue)]

        def kept_from(start: int) -> list[Message]:
            return [*system, *dialogue[start:], current]

        low, high = 0, len(starts) - 1  # the earliest start whose excerpt fits; the last always "fits"
        while low < high:  # a later start keeps less, so fitting is monotonic: bisect
            middle = (low + high) // 2
            if self._count(kept_from(starts[middle])) <= budget:
                high = middle
            else:
                low = middle + 1
        start = starts[low]
        return _LocalPrompt(kept_from(start), dropped=start, window=window)

    def _count(self, messages: Sequence[Message]) -> int:
        try:
            return self.engine.count_prompt_tokens(messages)
        except ContextWindowExceeded as error:
            return error.prompt_tokens

    def _confidence_shortfall(self, draft: _LocalDraft, assessment: Assessment) -> str | None:
        if draft.aborted:
            return draft.aborted
        if assessment.refused:
            return "the local model says this needs a bigger model"
        cutoff = self.cutoff
        if assessment.confidence < cutoff:
            return self._tag(f"low confidence ({assessment.confidence:.2f} < {cutoff:.2f})")
        return None

    def _with_samples(self, assessment: Assessment, messages: Sequence[Message], draft: _LocalDraft,
                      question: str) -> Assessment:
        """The assessment with sample agreement, where the calibration weighs it and the draws
        could flip the route; else as it was (the score then takes agreement as neutral)."""
        from offload.consistency import consistency_features, could_flip, draw_samples

        if assessment.refused or not self.active.samples or not could_flip(assessment.features, self.calibration,
                                                                          self.cutoff):
            return assessment
        samples = draw_samples(self.engine, messages, self.active.samples,
                               temperature=self.active.sample_temperature, sampling=self.sampling)
        answer = "".join(t.text for t in draft.tokens)
        values = {**assessment.features, **consistency_features(answer, samples, question)}
        return Assessment(answer_confidence(values, False, self.calibration), False, values)

    # -- the local leg --------------------------------------------------------------------

    def _generate_local(
        self, turn: Turn, prompt: _LocalPrompt, cancel: threading.Event, draft: _LocalDraft, monitored: bool
    ) -> Iterator[RouterEvent]:
        """Stream the local answer into `draft`; when the prompt cannot run here, the turn ends
        (with a TurnDone) and `draft.unfit` says so."""
        monitor = None
        if monitored:
            question = prompt.messages[-1]["content"] if prompt.messages else ""
            monitor = StreamMonitor(self.engine.info.refusal, abort=self.active.abort, prompt=question)
        if prompt.dropped and not prompt.noted:
            prompt.noted = True
            yield Notice(
                f"This conversation is longer than the local model's context window ({prompt.window} "
                f"tokens): its {prompt.dropped} oldest messages were left out of this answer."
            )
        request = GenerationRequest(messages=list(prompt.messages), max_tokens=turn.max_tokens, **self.sampling)
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
            draft.unfit = True
            return
        if draft.finish is not None:
            draft.prompt_tokens = draft.finish.usage.prompt_tokens

    def _local_done(
        self, draft: _LocalDraft, status: Literal["complete", "interrupted", "error"],
        reason: str, confidence: float | None,
    ) -> TurnDone:
        info = self.engine.info
        finish = draft.finish
        return TurnDone(
            route="local", model=info.model_id, provider=info.backend, status=status,
            reason=reason, confidence=confidence,
            refusal=is_refusal(draft.text, info.refusal),
            tokens_in=finish.usage.prompt_tokens if finish else draft.prompt_tokens,
            tokens_out=finish.usage.completion_tokens if finish else len(draft.tokens),
            ttft_ms=finish.timings.ttft_ms if finish else None,
            tok_s=finish.timings.decode_tok_s if finish else None,
        )

    def _fall_back_local(
        self, turn: Turn, local: _LocalPrompt, cancel: threading.Event,
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
            draft = _LocalDraft()
            yield from self._generate_local(turn, local, cancel, draft, monitored=False)
            if draft.unfit:
                return
        yield self._local_done(draft, "complete", reason, confidence)

    # -- the cloud leg --------------------------------------------------------------------

    def _escalate(self, leg: _Escalation, approve: Approver | None, cancel: threading.Event) -> Iterator[RouterEvent]:
        """Send `leg.messages` to the cloud, after ask mode's approval; when they cannot go, a
        local fallback answers from `leg.local`."""
        from offload.errors import ProviderError
        from offload.providers.base import StreamEnd

        turn, why, draft, confidence, local = leg.turn, leg.why, leg.draft, leg.confidence, leg.local
        provider = self.provider
        assert provider is not None and leg.verdict.allowed, "escalation is decided by the gate only"
        share = self.cloud_share(turn, leg.messages)
        redactor = self.redactor_for(turn.conversation_id) if self.settings.redact else None
        model, temperature = self.cloud_model, self.cloud_temperature

        def request_for(chosen: list[dict[str, str]]) -> OutgoingRequest:
            redacted = redactor.redact_messages(chosen) if redactor is not None else chosen
            return provider.request(redacted, model, turn.max_tokens, temperature)

        request = request_for(share.messages)

        if leg.verdict.needs_approval:
            preview = Preview(
                request,
                context=describe_context(share.policy, self.settings.context_turns),
                held_before_opt_in=share.held_before_opt_in,
                alone=request_for(share.alone) if share.earlier_messages else None,
            )
            unasked: str | None = None
            try:
                answer = as_approval(approve(preview) if approve is not None else False)
            except ApprovalUnavailable as problem:
                answer, unasked = Approval.KEEP_LOCAL, str(problem)
            if answer is Approval.SEND_ALONE and preview.alone is not None:
                share = CloudShare(share.alone, share.policy, 0, share.held_before_opt_in)
                request = preview.alone
            if answer is Approval.KEEP_LOCAL:
                if unasked:
                    reason = f"kept local: {why}; ask mode could not ask you"
                    yield Notice(f"Not sent to {provider.host}: {unasked} The local answer stays.")
                else:
                    reason = f"kept local: {why}; you declined sending it to {provider.host}"
                    yield Notice(f"Not sent to {provider.host}: you declined. The local answer stays.")
                yield Decision("local", reason, confidence, dict(leg.features))
                yield from self._fall_back_local(turn, local, cancel, draft, reason,
                                                 kept_local_confidence(confidence), on_screen=True)
                return

        if draft is not None and draft.tokens:
            yield Discard(f"escalating to {provider.name}: {why}")
        complete = draft is not None and draft.aborted is None and draft.finish is not None
        yield Decision("cloud", f"escalated: {why}", confidence, dict(leg.features),
                       provider=provider.name, model=model, draft_complete=complete)
        restorer = redactor.streaming_restorer() if redactor else None
        streamed = False
        end: StreamEnd | None = None
        try:
            for event in provider.send(request, cancel):
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
                yield self._egress(error.exchange, redactor, share)
            yield Notice(f"The cloud failed: {error} Showing the local answer.")
            if streamed:
                yield Discard("the cloud reply broke off")
            reason = f"kept local: {why}, but the cloud failed"
            yield from self._fall_back_local(turn, local, cancel, draft, reason,
                                             kept_local_confidence(confidence), on_screen=False)
            return
        assert end is not None, "a provider ends every call that did not raise with a StreamEnd"
        yield self._egress(end.exchange, redactor, share)
        usage = end.usage
        yield TurnDone(
            route="cloud", model=end.model, provider=provider.name,
            status="interrupted" if end.finish_reason == "cancelled" else "complete",
            reason=f"escalated: {why}; sent {self._context_label(share)}", confidence=confidence,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
        )

    def cloud_share(self, turn: Turn, messages: Sequence[Message]) -> CloudShare:
        """What this turn's cloud request carries under the conversation's context policy."""
        if turn.history is not None:
            history = list(turn.history)
        else:
            history = [HistoryEntry(m["role"], m["content"]) for m in messages[:-1]]
        policy = turn.policy.context or self.settings.context_policy
        return cloud_share(history, messages[-1], policy, self.settings.context_turns)

    def _context_label(self, share: CloudShare) -> str:
        if share.earlier_messages == 0:
            return "this message only"
        return f"{describe_context(share.policy, self.settings.context_turns)} ({share.earlier_messages} earlier messages)"

    @staticmethod
    def _egress(exchange: Exchange, redactor: Redactor | None, share: CloudShare) -> Egress:
        """The ledger's record, from what the provider measured on the wire."""
        return Egress(
            exchange,
            redactions=redactor.kinds_in(exchange.payload) if redactor else {},
            context_policy=share.policy, context_messages=share.earlier_messages,
        )


def as_approval(answer: bool | Approval | None) -> Approval:
    """An approver's answer as an Approval (True: SEND; False or None: KEEP_LOCAL)."""
    if isinstance(answer, Approval):
        return answer
    return Approval.SEND if answer else Approval.KEEP_LOCAL


def _one_line(text: str, limit: int = 72) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
