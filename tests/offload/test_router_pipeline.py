"""The router's pipeline per turn, against a recording OpenAI-compatible server on 127.0.0.1:
keep or escalate, ask-mode approval, fallbacks, and the capability rules.

The local side is ScriptedEngine (a fake, for exact logprobs); test_router_property.py runs the
same guarantees with the real engine."""

from __future__ import annotations

import json
import threading

from conftest_router import (
    REFUSAL,
    loopback_provider,
    ScriptedEngine,
    confident,
    recording_server,  # noqa: F401 (a fixture)
    unsure,
)
from offload.events import Decision, Discard, Egress, Notice, Token, TurnDone
from offload.privacy import ConversationPolicy, PrivacySettings
from offload.router import Preview, Router, Turn

OPTED_IN = ConversationPolicy(cloud_opt_in=True)


def answer_by_topic(text: str):
    if "quit" in text:
        return confident("Press Ctrl+Q to quit.")
    if "vim" in text:
        return confident(REFUSAL)
    return unsure("Maybe try something else entirely, perhaps later, who knows really.")


def run(router: Router, content: str, policy=OPTED_IN, approve=None, history=(), **turn):
    messages = [*history, {"role": "user", "content": content}]
    return list(router.run(Turn(7, messages, policy, **turn), approve=approve))


def text_of(events, route=None) -> str:
    """What the user ends up seeing: tokens, minus anything withdrawn by a Discard."""
    shown = ""
    for event in events:
        if isinstance(event, Discard):
            shown = ""
        elif isinstance(event, Token) and (route is None or event.route == route):
            shown += event.text
    return shown


def make_router(server, mode="auto", engine=None, **settings) -> Router:
    return Router(engine or ScriptedEngine(answer_by_topic), PrivacySettings(mode=mode, **settings),
                  provider=loopback_provider(server), cloud_model="echo-1")


def test_a_confident_answer_stays_local_and_nothing_leaves(recording_server) -> None:
    events = run(make_router(recording_server), "how do I quit?")
    done = events[-1]
    assert isinstance(done, TurnDone) and done.route == "local" and done.status == "complete"
    assert done.confidence > 0.8 and "confident" in done.reason
    assert text_of(events) == "Press Ctrl+Q to quit."
    assert recording_server.requests == []
    decision = [e for e in events if isinstance(e, Decision)][-1]
    assert "mean_logprob" in decision.features


def test_a_refusal_escalates_with_redaction_restored_in_the_reply(recording_server) -> None:
    engine = ScriptedEngine(answer_by_topic)
    router = make_router(recording_server, engine=engine)
    events = run(router, "vim: mail ann@corp.example about 4111 1111 1111 1111")
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("Discard") < kinds.index("Egress") < kinds.index("TurnDone")
    assert engine.decoded < len(confident(REFUSAL)), "the monitor stops decoding the refusal"
    body = recording_server.requests[0]["raw"]
    assert "ann@corp.example" not in body and "4111" not in body
    assert "[EMAIL_1]" in body and "[CARD_1]" in body
    assert text_of(events) == "Echo: vim: mail ann@corp.example about 4111 1111 1111 1111"
    egress = next(e for e in events if isinstance(e, Egress))
    assert egress.host == recording_server.url.removeprefix("http://") and egress.redactions == {"EMAIL": 1, "CARD": 1}
    assert json.loads(egress.payload)["messages"] == recording_server.requests[0]["json"]["messages"]
    assert egress.payload == body
    assert egress.bytes_sent > len(body.encode()) and egress.bytes_received > 0  # headers count too
    done = events[-1]
    assert done.route == "cloud" and "bigger model" in done.reason


def test_low_confidence_escalates_early(recording_server) -> None:
    engine = ScriptedEngine(answer_by_topic)
    events = run(make_router(recording_server, engine=engine), "tell me something")
    assert events[-1].route == "cloud" and "guessing" in events[-1].reason
    assert engine.decoded == 6


def test_ask_mode_shows_the_exact_payload_and_a_no_keeps_it_local(recording_server) -> None:
    previews: list[Preview] = []

    def decline(preview: Preview) -> bool:
        previews.append(preview)
        return False

    engine = ScriptedEngine(answer_by_topic)
    events = run(make_router(recording_server, mode="ask", engine=engine), "vim? ssn 536-22-8901",
                 approve=decline)
    assert recording_server.requests == []
    assert previews and previews[0].host.startswith("127.0.0.1:") and previews[0].provider == "loopback"
    assert "536-22-8901" not in previews[0].payload and "[SSN_1]" in previews[0].payload
    assert text_of(events) == REFUSAL, "the cut-short draft is answered again in full"
    done = events[-1]
    assert done.route == "local" and "declined" in done.reason and done.confidence <= 0.5


def test_ask_mode_sends_exactly_what_was_approved(recording_server) -> None:
    previews: list[Preview] = []
    events = run(make_router(recording_server, mode="ask"), "vim? ssn 536-22-8901",
                 approve=lambda p: previews.append(p) or True)
    assert previews[0].payload == recording_server.requests[0]["raw"]
    assert events[-1].route == "cloud"


def test_the_previewed_request_is_the_object_sent_and_recorded(recording_server) -> None:
    """One request object: the preview shows it, the provider sends it (the body is not rebuilt),
    the ledger's event carries it."""
    provider = loopback_provider(recording_server)
    sent = []
    real_send = provider.send

    def send(request, cancel=None):  # a spy: the real provider still sends
        sent.append(request)
        return real_send(request, cancel)

    provider.send = send
    router = Router(ScriptedEngine(answer_by_topic), PrivacySettings(mode="ask"), provider=provider,
                    cloud_model="echo-1")
    previews: list[Preview] = []
    events = run(router, "vim? ssn 536-22-8901", approve=lambda p: previews.append(p) or True)
    (egress,) = [e for e in events if isinstance(e, Egress)]
    assert len(sent) == 1 and sent[0] is previews[0].request and egress.request is previews[0].request
    assert recording_server.requests[0]["raw"] == previews[0].request.body == egress.payload
    assert egress.bytes_sent > len(egress.payload.encode())  # the wire's count: body and headers


def test_no_approver_in_ask_mode_means_no(recording_server) -> None:
    events = run(make_router(recording_server, mode="ask"), "vim?")
    assert recording_server.requests == [] and events[-1].route == "local"


def test_not_allowed_keeps_the_local_answer_marked_low_confidence(recording_server) -> None:
    for mode, policy in [("offline", OPTED_IN), ("auto", ConversationPolicy()),
                         ("auto", ConversationPolicy(cloud_opt_in=True, local_only=True))]:
        events = run(make_router(recording_server, mode=mode), "tell me something", policy=policy)
        done = events[-1]
        assert done.route == "local" and done.confidence < 0.5 and "kept local" in done.reason
        assert text_of(events).startswith("Maybe try something else entirely")
    assert recording_server.requests == []


def test_a_failing_cloud_falls_back_to_the_local_answer_with_a_notice(recording_server) -> None:
    recording_server.fail_with = 500
    events = run(make_router(recording_server), "vim?")
    assert any(isinstance(e, Notice) and "failed" in e.text for e in events)
    assert text_of(events) == REFUSAL
    assert events[-1].route == "local" and "cloud failed" in events[-1].reason
    assert any(isinstance(e, Egress) for e in events), "the request did leave: the ledger says so"


def test_slash_cloud_goes_straight_to_the_cloud_without_the_prefix(recording_server) -> None:
    engine = ScriptedEngine(answer_by_topic)
    events = run(make_router(recording_server, engine=engine), "/cloud how do I quit?")
    assert engine.generations == 0
    assert recording_server.requests[0]["json"]["messages"][-1]["content"] == "how do I quit?"
    assert events[-1].route == "cloud" and "/cloud" in events[-1].reason


def test_slash_local_never_escalates(recording_server) -> None:
    events = run(make_router(recording_server), "/local tell me something")
    assert recording_server.requests == [] and events[-1].route == "local"


def test_slash_cloud_when_not_allowed_says_so_and_answers_locally(recording_server) -> None:
    events = run(make_router(recording_server, mode="offline"), "/cloud how do I quit?")
    assert any(isinstance(e, Notice) and "offline" in e.text for e in events)
    assert events[-1].route == "local" and recording_server.requests == []


def test_a_prompt_over_the_context_window_escalates_before_generating(recording_server) -> None:
    engine = ScriptedEngine(answer_by_topic, context_window=32)
    events = run(make_router(recording_server, engine=engine), "quit " * 40)
    assert engine.generations == 0 and events[-1].route == "cloud"
    assert "context window" in events[-1].reason


def test_a_prompt_over_the_window_with_no_cloud_ends_in_a_clear_error(recording_server) -> None:
    engine = ScriptedEngine(answer_by_topic, context_window=32)
    events = run(make_router(recording_server, mode="offline", engine=engine), "quit " * 40)
    assert isinstance(events[-2], Notice) and "context window" in events[-2].text
    assert events[-1].status == "error"


def test_a_request_outside_declared_skills_escalates(recording_server) -> None:
    engine = ScriptedEngine(answer_by_topic, skills=("app-help", "small-talk"))
    events = run(make_router(recording_server, engine=engine), "quit?\n```python\nprint(1)\n```")
    assert engine.generations == 0 and "code" in events[-1].reason and events[-1].route == "cloud"


def test_context_policy_and_stable_placeholders_across_turns(recording_server) -> None:
    router = make_router(recording_server, context_turns=1)
    history = [{"role": "user", "content": "old q0 bob@corp.example"}, {"role": "assistant", "content": "a0"},
               {"role": "user", "content": "q1 bob@corp.example"}, {"role": "assistant", "content": "a1"}]
    run(router, "vim? ann@corp.example", history=history[:2])
    run(router, "vim? ann@corp.example again", history=history)
    first, second = (r["json"]["messages"] for r in recording_server.requests)
    assert first[-1]["content"] == "vim? [EMAIL_2]" and first[0]["content"] == "old q0 [EMAIL_1]"
    assert [m["content"] for m in second] == ["q1 [EMAIL_1]", "a1", "vim? [EMAIL_2] again"]


def test_redaction_off_sends_text_as_written(recording_server) -> None:
    run(make_router(recording_server, redact=False), "vim? ann@corp.example")
    assert "ann@corp.example" in recording_server.requests[0]["raw"]


def test_cancel_during_local_generation_ends_interrupted_and_local(recording_server) -> None:
    cancel = threading.Event()
    cancel.set()
    router = make_router(recording_server)
    events = list(router.run(Turn(1, [{"role": "user", "content": "vim?"}], OPTED_IN), cancel=cancel))
    assert events[-1].status == "interrupted" and recording_server.requests == []


def test_declining_a_finished_low_confidence_draft_shows_it_once(recording_server) -> None:
    words = ["Perhaps", " try", " this", " or", " that", " or", " maybe", " something", " else", "."]
    engine = ScriptedEngine(lambda text: [(w, -3.5) for w in words])  # unsure, never 6 guesses in a row
    events = run(make_router(recording_server, mode="ask", engine=engine), "something odd",
                 approve=lambda preview: False)
    assert recording_server.requests == [] and engine.generations == 1
    assert [e.text for e in events if isinstance(e, Token)] == words
    assert not any(isinstance(e, Discard) for e in events)
    assert events[-1].route == "local" and events[-1].confidence < 0.5


def test_a_reply_kept_local_against_the_routers_judgement_never_reads_as_confident() -> None:
    from offload.router import KEPT_LOCAL_CEILING, LOW_CONFIDENCE, kept_local_confidence

    assert kept_local_confidence(None) == LOW_CONFIDENCE  # no draft was scored
    assert kept_local_confidence(0.93) == KEPT_LOCAL_CEILING
    assert kept_local_confidence(0.2) == 0.2
