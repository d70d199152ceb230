"""The privacy guarantees as a property: random settings x conversations x prompts with planted
personal data, a real local engine, and a recording server on 127.0.0.1 standing in for the cloud.

- no request at all unless the mode allows it, the conversation opted in, and Tandem is online
  (and, in ask mode, the user approved);
- no planted value ever reaches the server while redaction is on;
- the placeholders the server echoes back are restored in the reply the user sees.
"""

from __future__ import annotations

import json
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest_router import loopback_provider, serving_recorder
from offload.events import Discard, Token, TurnDone
from offload.network import Network
from offload.privacy import ConversationPolicy, PrivacySettings
from offload.router import Router, Turn

PLANTED = {
    "email": "ann.lee@corp.example",
    "phone": "+44 20 7946 0958",
    "card": "4111 1111 1111 1111",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "ssn": "536-22-8901",
    "ip": "10.20.30.40",
    "key": "sk-proj-Zx8Kq2Lm9Pw4Rt7Yb1Nc5Hd0",
    "term": "Project Kestrel",
}
TERMS = ("Project Kestrel",)


@pytest.fixture(scope="module")
def local_engine():
    """The embedded model on the real engine; skipped until both are on this branch."""
    loader = pytest.importorskip("engine.loader", reason="the engine (engine.loader) has not landed here yet")
    from assets import embedded_model_dir

    model_dir = embedded_model_dir()
    if not (model_dir / "mlc-chat-config.json").exists():
        pytest.skip(f"the embedded model is not at {model_dir} yet (branch nano)")
    engine = loader.open_engine(model_dir)
    yield engine
    engine.close()


def sentence(draw, planted: int = 0) -> str:
    kinds = draw(st.lists(st.sampled_from(sorted(PLANTED)), min_size=planted, max_size=3))
    words = draw(st.lists(st.sampled_from(["how", "do", "I", "quit", "vim", "mail", "to", "with", "and"]),
                          min_size=1, max_size=5))
    return " ".join(words + [PLANTED[k] for k in kinds])


@st.composite
def scenarios(draw):
    # Half the cases open every door, so that requests happen and redaction is exercised.
    open_door = draw(st.booleans())
    privacy = PrivacySettings(
        mode=draw(st.sampled_from(["ask", "auto"] if open_door else ["offline", "ask", "auto"])),
        redact=draw(st.sampled_from([True, True, True, False])),
        context_turns=draw(st.integers(0, 3)),
        terms=TERMS,
    )
    policy = ConversationPolicy(cloud_opt_in=open_door or draw(st.booleans()),
                                local_only=not open_door and draw(st.booleans()))
    online = open_door or draw(st.booleans())
    approves = draw(st.booleans())
    history = []
    for _ in range(draw(st.integers(0, 3))):
        history += [{"role": "user", "content": sentence(draw)},
                    {"role": "assistant", "content": sentence(draw)}]
    prefix = draw(st.sampled_from(["", "", "/cloud ", "/local "]))
    prompt = prefix + sentence(draw, planted=1)
    return privacy, policy, online, approves, history, prompt


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_nothing_leaves_unless_allowed_and_nothing_personal_ever(local_engine, scenario) -> None:
    privacy, policy, online, approves, history, prompt = scenario
    messages = [*history, {"role": "user", "content": prompt}]
    with serving_recorder() as server:
        network = Network(offline=not online)
        router = Router(local_engine, privacy, provider=loopback_provider(server, network),
                        network=network, cloud_model="echo-1")
        previews = []
        events = list(router.run(Turn(1, messages, policy, max_tokens=12),
                                 approve=lambda p: previews.append(p) or approves))

    may_send = privacy.mode != "offline" and policy.cloud_opt_in and not policy.local_only and online
    may_send = may_send and (privacy.mode == "auto" or approves) and not prompt.startswith("/local")
    if not may_send:
        assert server.requests == []
    if prompt.startswith("/cloud ") and may_send:
        assert len(server.requests) == 1
    if privacy.redact:
        for body in [r["raw"] for r in server.requests] + [p.payload for p in previews]:
            for value in PLANTED.values():
                assert value not in body and value.lower() not in json.loads(body).__repr__().lower()
    done = events[-1]
    assert isinstance(done, TurnDone)
    if done.route == "cloud":
        shown = ""
        for event in events:
            shown = "" if isinstance(event, Discard) else shown + (event.text if isinstance(event, Token) else "")
        sent_prompt = prompt.removeprefix("/cloud ").strip() if prompt.startswith("/cloud") else prompt
        assert shown == f"Echo: {sent_prompt}"
