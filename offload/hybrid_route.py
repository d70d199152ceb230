"""The router's hybrid leg: the privacy gate, redaction and ask-mode preview of the cloud apply
to the verifier too; the tokenizer probe; the turn streamed from offload.hybrid; one egress entry
with every round's bytes; a verifier that fails mid-turn leaves the rest to the local model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from engine.api import Message
from engine.errors import ContextWindowExceeded
from offload.errors import OffloadError
from offload.events import Decision, Egress, Notice, RouterEvent, Token, TurnDone
from offload.hybrid import HybridDecoder, HybridFinish, HybridToken, VerifierLost
from offload.outgoing import Exchange, OutgoingRequest
from offload.privacy import may_leave
from offload.verifier import VerifierClient

if TYPE_CHECKING:
    from offload.router import Approver, Router, Turn


def run_hybrid(
    router: Router, turn: Turn, messages: Sequence[Message], approve: Approver | None, cancel: threading.Event
) -> Iterator[RouterEvent]:
    """Yield the hybrid turn's events, ending with its TurnDone; a route that ends without one
    (before any reply text) hands the turn back to the local-first route."""
    from offload.router import Approval, ApprovalUnavailable, Preview, as_approval

    verifier = router.verifier
    assert verifier is not None
    online = True if router.network is None else router.network.check().online
    verdict = may_leave(router.settings, turn.policy, online)
    if not verdict.allowed:
        yield Notice(f"Hybrid decoding with {verifier.host} is off for this turn: {verdict.reason}.")
        return
    try:
        decoder = HybridDecoder(router.engine, verifier)
    except OffloadError as error:
        yield Notice(f"{error} Answering locally.")
        return
    # The verifier sees what the cloud would: the conversation's cloud-context share, redacted.
    share = router.cloud_share(turn, messages)
    outgoing = share.messages
    redactor = router.redactor_for(turn.conversation_id) if router.settings.redact else None
    if redactor is not None:
        outgoing = redactor.redact_messages(outgoing)
    try:
        prompt_ids = decoder.engine.prompt_ids(outgoing)
    except ContextWindowExceeded:
        return
    if len(prompt_ids) + 2 > router.engine.info.context_window:
        return
    # What the verifier sees: this prompt (as token ids) and the drafts that follow it.
    payload = decoder.engine.tokenizer.decode(prompt_ids, skip_special_tokens=False)
    # The body is the prompt as the verifier scores it (token ids, shown decoded); no chat
    # messages travel as such, so the preview lists none (it shows the body whole).
    request = OutgoingRequest(verifier.name, verifier.host, payload, model=verifier.model,
                              max_tokens=turn.max_tokens, temperature=0.0)
    if verdict.needs_approval:
        try:
            answer = as_approval(approve(Preview(request)) if approve else False)
        except ApprovalUnavailable as problem:
            yield Notice(f"Not sent to {verifier.host} for hybrid decoding: {problem} Answering locally.")
            return
        if answer is Approval.KEEP_LOCAL:
            yield Notice(f"Not sent to {verifier.host} for hybrid decoding: you declined. Answering locally.")
            return

    def egress(rounds: int) -> Egress:
        # The rounds' bodies are token ids: the ledger keeps the prompt they encode, and their count.
        summary = f"{payload}\n\n[{rounds} verifier rounds: this prompt and the local drafts, as token ids]"
        sent = Exchange(replace(request, body=summary), verifier.bytes_sent, verifier.bytes_received)
        return Egress(
            sent,
            redactions=redactor.kinds_in(payload) if redactor else {},
            context_policy=share.policy, context_messages=share.earlier_messages,
        )

    try:
        verifier.begin_turn()
        decoder.check_tokenizers()
    except OffloadError as error:
        if verifier.bytes_sent:
            yield egress(0)
        verifier.close()
        yield Notice(f"Hybrid decoding refused: {error} Answering locally.")
        return

    yield Decision("hybrid", f"hybrid: the local model drafts, {verifier.host} verifies")
    restorer = redactor.streaming_restorer() if redactor else None
    started = time.perf_counter()
    finish: HybridFinish | None = None
    lost = False
    finished = threading.Event()
    # A cancel cuts a verifier call in flight at once, as it does a cloud stream.
    threading.Thread(target=_cut_on_cancel, args=(cancel, verifier, finished), daemon=True).start()
    try:
        for event in decoder.generate(prompt_ids, turn.max_tokens, temperature=0.0, cancel=cancel):
            if isinstance(event, HybridToken):
                shown = restorer.feed(event.text) if restorer else event.text
                if shown:
                    yield Token(text=shown, route="hybrid", logprob=event.logprob)
            elif isinstance(event, VerifierLost):
                lost = True
                yield Notice(f"{event.message} Finishing this reply on the local model.")
            else:
                finish = event
        tail = restorer.flush() if restorer else ""
        if tail:
            yield Token(text=tail, route="hybrid")
    finally:
        finished.set()
        verifier.close()
    assert finish is not None, "the decoder always ends with a HybridFinish"
    stats = finish.stats
    router.hybrid_totals.add(stats)
    yield egress(stats.rounds)
    elapsed = time.perf_counter() - started
    why = f"hybrid: {stats.acceptance:.0%} of drafts accepted, {stats.passes_saved} verifier passes saved"
    if lost:
        why += "; the verifier failed, finished locally"
    yield TurnDone(
        route="hybrid",
        model=f"{router.engine.info.model_id} + {verifier.model or verifier.host}",
        provider=verifier.name,
        status="interrupted" if finish.reason == "cancelled" else "complete",
        reason=why,
        tokens_in=finish.prompt_tokens,
        tokens_out=finish.completion_tokens,
        tok_s=finish.completion_tokens / elapsed if elapsed > 0 else None,
        acceptance=stats.acceptance,
        passes_saved=stats.passes_saved,
    )


def _cut_on_cancel(cancel: threading.Event, verifier: VerifierClient, finished: threading.Event) -> None:
    while not finished.is_set():
        if cancel.wait(0.05):
            verifier.cut()
            return
