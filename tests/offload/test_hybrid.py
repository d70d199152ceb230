"""Hybrid speculative decoding against `tandem serve` on 127.0.0.1: greedy output is token for
token the verifier's own greedy output, mismatched tokenizers are refused, a verifier that dies
mid-turn leaves the turn on the local model, and every round's bytes are counted."""

from __future__ import annotations

import json
import threading

import pytest
from offload_faults import build_tiny_checkpoint

from engine.api import GenerationRequest, TokenEvent
from offload.hybrid import HybridDecoder, HybridFinish, HybridToken, TokenizerMismatch, VerifierLost
from offload.network import Network
from offload.verifier import VerifierClient

MESSAGES = [{"role": "user", "content": "How do I start a new conversation?"}]


def serve(engine):
    from app.server.runner import make_server

    server = make_server(engine, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("hybrid-hf"), seed=3)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, tiny_checkpoint):
    """One random checkpoint converted twice: float32 verifier, 4-bit drafter (the realistic gap)."""
    from engine.convert import convert_hf_checkpoint
    from engine.loader import open_engine

    checkpoint = tiny_checkpoint
    engines = []
    for quantization in ("q0f32", "q4f32_1"):
        out = tmp_path_factory.mktemp(f"hybrid-{quantization}") / "model"
        convert_hf_checkpoint(checkpoint, out, quantization)
        engines.append(open_engine(out, backend="tvm"))
    yield engines
    for engine in engines:
        engine.close()


@pytest.fixture(scope="module")
def tiny_verifier(tiny_pair):
    server = serve(tiny_pair[0])
    yield server
    stop(server)


@pytest.fixture(scope="module")
def nano_drafter(served_model_dir):
    from engine.loader import open_engine

    engine = open_engine(served_model_dir, backend="tvm")
    yield engine
    engine.close()


def greedy_ids(engine, max_tokens: int) -> list[int]:
    events = engine.generate(GenerationRequest(MESSAGES, max_tokens=max_tokens, temperature=0.0))
    return [e.token_id for e in events if isinstance(e, TokenEvent)]


def run(decoder: HybridDecoder, max_tokens: int, **kwargs) -> tuple[list[HybridToken], list[VerifierLost], HybridFinish]:
    tokens, lost, finish = [], [], None
    prompt = decoder.engine.prompt_ids(MESSAGES)
    for event in decoder.generate(prompt, max_tokens, **kwargs):
        if isinstance(event, HybridToken):
            tokens.append(event)
        elif isinstance(event, VerifierLost):
            lost.append(event)
        else:
            finish = event
    assert finish is not None
    return tokens, lost, finish


def client(server) -> VerifierClient:
    return VerifierClient(server.url, network=Network(), timeout_s=30)


def test_greedy_hybrid_is_the_verifiers_greedy_output_with_a_4bit_drafter(tiny_pair, tiny_verifier):
    verifier_engine, drafter = tiny_pair
    decoder = HybridDecoder(drafter, client(tiny_verifier))
    decoder.check_tokenizers()
    tokens, lost, finish = run(decoder, 40)
    expected = greedy_ids(verifier_engine, 40)
    assert not lost
    assert [t.token_id for t in tokens][: len(expected)] == expected[: len(tokens)]
    assert finish.completion_tokens == len(expected) or finish.reason == "stop"
    stats = finish.stats
    assert stats.rounds >= 1 and stats.verified_tokens == finish.completion_tokens
    assert stats.rounds < finish.completion_tokens  # fewer verifier passes than tokens
    assert 0 < stats.acceptance <= 1


def test_a_model_drafting_for_itself_is_always_accepted(served_engine, nano_drafter):
    server = serve(served_engine)
    try:
        decoder = HybridDecoder(nano_drafter, client(server))
        decoder.check_tokenizers()
        tokens, lost, finish = run(decoder, 24)
    finally:
        stop(server)
    assert [t.token_id for t in tokens] == greedy_ids(served_engine, 24)[: len(tokens)]
    assert finish.stats.acceptance == 1.0 and not lost
    assert finish.stats.tokens_per_pass > 2


def test_a_verifier_with_another_tokenizer_is_refused(tiny_pair, served_engine):
    server = serve(served_engine)
    try:
        decoder = HybridDecoder(tiny_pair[1], client(server))
        with pytest.raises(TokenizerMismatch, match="tokenizes text differently"):
            decoder.check_tokenizers()
    finally:
        stop(server)


def test_a_verifier_killed_mid_turn_leaves_the_turn_on_the_local_model(tiny_pair):
    verifier_engine, drafter = tiny_pair
    server = serve(verifier_engine)
    verifier = client(server)
    decoder = HybridDecoder(drafter, verifier)
    prompt = drafter.prompt_ids(MESSAGES)
    events = []
    for event in decoder.generate(prompt, 30):
        events.append(event)
        if isinstance(event, HybridToken) and len(events) == 1:
            stop(server)  # the verifier goes away after the first round
    lost = [e for e in events if isinstance(e, VerifierLost)]
    tokens = [e for e in events if isinstance(e, HybridToken)]
    finish = events[-1]
    assert len(lost) == 1 and "verifier" in lost[0].message
    assert isinstance(finish, HybridFinish) and finish.reason in ("length", "stop")
    assert any(not t.verified for t in tokens)  # the local model carried on
    assert finish.completion_tokens == len(tokens) or finish.reason == "stop"


def test_every_rounds_bytes_are_counted(tiny_pair, tiny_verifier):
    verifier = client(tiny_verifier)
    decoder = HybridDecoder(tiny_pair[1], verifier)
    verifier.begin_turn()
    decoder.check_tokenizers()
    _, _, finish = run(decoder, 12)
    bodies = verifier.payloads
    assert len(bodies) == finish.stats.rounds + 1  # the probe, then one call per round
    assert verifier.bytes_sent > sum(len(b.encode()) for b in bodies)  # bodies plus HTTP headers
    assert verifier.bytes_received > 0


# -- the router's hybrid route ---------------------------------------------------------------

from offload.events import Decision, Egress, Notice, Token, TurnDone  # noqa: E402
from offload.privacy import ConversationPolicy, PrivacySettings  # noqa: E402
from offload.router import Router, Turn  # noqa: E402

OPTED_IN = ConversationPolicy(cloud_opt_in=True)


def route(drafter, server, mode: str = "auto", messages=MESSAGES, approve=None, network=None):
    network = network or Network()
    url = server if isinstance(server, str) else server.url
    verifier = VerifierClient(url, network=network, timeout_s=30, name="tandem-serve")
    router = Router(drafter, PrivacySettings(mode=mode), network=network, verifier=verifier)
    return list(router.run(Turn(1, messages, OPTED_IN, max_tokens=16), approve))


def test_the_router_streams_a_hybrid_turn_with_one_ledger_entry(tiny_pair, tiny_verifier):
    verifier_engine, drafter = tiny_pair
    events = route(drafter, tiny_verifier)
    decisions = [e for e in events if isinstance(e, Decision)]
    assert decisions[0].route == "hybrid"
    tokens = [e for e in events if isinstance(e, Token)]
    assert tokens and {t.route for t in tokens} == {"hybrid"}
    local = verifier_engine.generate(GenerationRequest(MESSAGES, max_tokens=16, temperature=0.0))
    assert "".join(t.text for t in tokens) == "".join(e.text for e in local if isinstance(e, TokenEvent))
    egress = [e for e in events if isinstance(e, Egress)]
    assert len(egress) == 1 and egress[0].host == tiny_verifier.url.split("//")[1].removesuffix("/v1")
    assert egress[0].bytes_sent > 0 and egress[0].bytes_received > 0
    done = events[-1]
    assert isinstance(done, TurnDone) and done.route == "hybrid" and done.status == "complete"
    assert done.acceptance is not None and done.passes_saved is not None and "verifier passes saved" in done.reason


def test_offline_mode_refuses_the_hybrid_route(tiny_pair, tiny_verifier):
    network = Network(offline=True)
    events = route(tiny_pair[1], tiny_verifier, mode="offline", network=network)
    assert any(isinstance(e, Notice) and "offline" in e.text for e in events)
    assert not any(isinstance(e, Egress) for e in events)
    assert events[-1].route == "local"


def test_ask_mode_previews_the_redacted_prompt_and_a_refusal_keeps_it_local(tiny_pair, tiny_verifier):
    seen = []
    secret = [{"role": "user", "content": "Mail jane.doe@example.com about the new conversation."}]
    events = route(tiny_pair[1], tiny_verifier, mode="ask", messages=secret, approve=lambda p: seen.append(p) or False)
    assert len(seen) == 1 and seen[0].provider == "tandem-serve"
    assert "jane.doe@example.com" not in seen[0].payload and "conversation" in seen[0].payload
    assert not any(isinstance(e, Egress) for e in events)
    assert events[-1].route == "local"


def test_an_unreachable_verifier_leaves_the_turn_local_with_a_notice(tiny_pair):
    server = serve(tiny_pair[0])
    url = server.url
    stop(server)
    events = route(tiny_pair[1], url)
    assert any(isinstance(e, Notice) and "Hybrid decoding refused" in e.text for e in events)
    assert events[-1].route == "local" and events[-1].status == "complete"


# -- against a stand-in for vLLM (its documented response shape, a toy model) -----------------


def test_the_client_keeps_a_vllm_shaped_verifiers_greedy_choice(tiny_pair):
    from vllm_standin import VllmStandIn

    drafter = tiny_pair[1]
    stand_in = VllmStandIn(drafter.tokenizer, vocab=drafter.chat_config.model_config.vocab_size)
    try:
        decoder = HybridDecoder(drafter, VerifierClient(stand_in.url, network=Network(), timeout_s=10))
        decoder.check_tokenizers()
        tokens, lost, finish = run(decoder, 20)
    finally:
        stand_in.close()
    prompt = drafter.prompt_ids(MESSAGES)
    expected, previous = [], prompt[-1]
    for _ in range(len(tokens)):
        previous = stand_in.best_after(previous)
        expected.append(previous)
    assert not lost and len(tokens) >= 1
    # The stand-in disagrees with the drafter nearly always: every token is the verifier's own.
    assert [t.token_id for t in tokens] == expected
    scored = [r for r in stand_in.requests if "echo" in r]
    assert len(scored) == finish.stats.rounds and all(r["prompt"][: len(prompt)] == prompt for r in scored)


def test_settings_and_the_route_label_show_the_hybrid_route(tiny_pair, tiny_verifier):
    from app.route_labels import describe_reply
    from app.settings import SettingsError, UserSettings, validate

    network = Network()
    verifier = VerifierClient(tiny_verifier.url, network=network, name="onprem")
    router = Router(tiny_pair[1], PrivacySettings(mode="auto"), network=network, verifier=verifier)
    events = list(router.run(Turn(1, MESSAGES, OPTED_IN, max_tokens=12)))
    done = events[-1]
    label = describe_reply(route=done.route, provider=done.provider, model=done.model, confidence=None,
                           tok_s=done.tok_s, reason=done.reason)
    assert label.startswith("⇄ hybrid · onprem") and "drafts accepted" in label and "verifier passes saved" in label
    summary = router.hybrid_totals.summary()
    assert summary.startswith("1 hybrid turns:") and f"{router.hybrid_totals.passes_saved} verifier passes saved" in summary
    assert validate(UserSettings(verifier="onprem")).verifier_provider().base_url.startswith("http://127.0.0.1")
    with pytest.raises(SettingsError, match="OpenAI-compatible"):
        validate(UserSettings(verifier="anthropic"))


def test_placeholders_the_verifier_writes_are_restored_in_the_stream(tiny_pair):
    from vllm_standin import VllmStandIn

    drafter = tiny_pair[1]
    stand_in = VllmStandIn(drafter.tokenizer, vocab=drafter.chat_config.model_config.vocab_size)
    secret = [{"role": "user", "content": "Write to jane.doe@example.com please."}]
    network = Network()
    verifier = VerifierClient(stand_in.url, network=network, name="standin")
    router = Router(drafter, PrivacySettings(mode="auto"), network=network, verifier=verifier)
    redacted = router.redactor_for(1).redact_messages(secret)
    assert "jane.doe@example.com" not in redacted[0]["content"]
    stand_in.prompt_length = len(drafter.prompt_ids(redacted))
    eos = drafter.chat_config.eos_token_ids[0]
    stand_in.script = [*drafter.tokenizer.encode("Sure: [EMAIL_1] it is."), eos]
    try:
        events = list(router.run(Turn(1, secret, OPTED_IN, max_tokens=40)))
    finally:
        stand_in.close()
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text == "Sure: jane.doe@example.com it is."
    (egress,) = [e for e in events if isinstance(e, Egress)]
    assert "jane.doe@example.com" not in egress.payload and egress.redactions == {"EMAIL": 1}
    assert all("jane.doe" not in json.dumps(r) for r in stand_in.requests)


def test_scores_match_transformers_on_the_same_weights(tiny_pair, tiny_verifier, tiny_checkpoint):
    import httpx
    import numpy as np
    import torch
    import transformers

    verifier_engine = tiny_pair[0]
    ids = verifier_engine.prompt_ids(MESSAGES) + greedy_ids(verifier_engine, 6)
    body = {"prompt": ids, "echo": True, "logprobs": 5, "max_tokens": 0, "return_tokens_as_token_ids": True}
    logprobs = httpx.post(tiny_verifier.url + "/completions", json=body, timeout=60).json()["choices"][0]["logprobs"]
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    with torch.no_grad():
        reference = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1).numpy()
    expected = [reference[i - 1, ids[i]] for i in range(1, len(ids))]
    np.testing.assert_allclose(logprobs["token_logprobs"][1:], expected, atol=2e-3)
    for i in range(1, len(ids)):
        best = int(np.argmax(reference[i - 1]))
        top = logprobs["top_logprobs"][i]
        assert top[f"token_id:{best}"] == pytest.approx(reference[i - 1, best], abs=2e-3)


def test_the_sampling_rule_keeps_the_verifiers_distribution():
    """Whatever the drafter proposes, accepted-or-resampled tokens follow the verifier's
    distribution (over the alternatives it sent): the speculative-sampling guarantee."""
    import numpy as np

    from offload.hybrid import _accept
    from offload.verifier import Scores

    rng = np.random.default_rng(0)
    verifier_row = {0: np.log(0.5), 1: np.log(0.3), 2: np.log(0.2)}
    q = np.log(np.array([0.1, 0.1, 0.7, 0.1]))  # the drafter prefers token 2
    scores = Scores(rows=[verifier_row], next_row=verifier_row, next_token=0)
    counts = np.zeros(4)
    for _ in range(20000):
        draft = [int(rng.choice(4, p=np.exp(q)))]
        accepted, chosen = _accept(draft, [q], scores, 1.0, rng)
        counts[draft[0] if accepted else chosen] += 1
    np.testing.assert_allclose(counts / counts.sum(), [0.5, 0.3, 0.2, 0.0], atol=0.015)


def test_cancelling_a_hybrid_turn_interrupts_it_without_blaming_the_verifier(tiny_pair, tiny_verifier):
    network = Network()
    verifier = VerifierClient(tiny_verifier.url, network=network, name="onprem")
    router = Router(tiny_pair[1], PrivacySettings(mode="auto"), network=network, verifier=verifier)
    cancel = threading.Event()
    events = []
    for event in router.run(Turn(1, MESSAGES, OPTED_IN, max_tokens=40), cancel=cancel):
        events.append(event)
        if isinstance(event, Token):
            cancel.set()
    done = events[-1]
    assert isinstance(done, TurnDone) and done.route == "hybrid" and done.status == "interrupted"
    assert not any(isinstance(e, Notice) for e in events)
    assert done.tokens_out < 40


def test_the_router_finishes_locally_with_a_notice_when_the_verifier_dies(tiny_pair):
    server = serve(tiny_pair[0])
    network = Network()
    verifier = VerifierClient(server.url, network=network, name="onprem")
    router = Router(tiny_pair[1], PrivacySettings(mode="auto"), network=network, verifier=verifier)
    events, stopped = [], False
    for event in router.run(Turn(1, MESSAGES, OPTED_IN, max_tokens=30)):
        events.append(event)
        if isinstance(event, Token) and not stopped:
            stop(server)
            stopped = True
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "Finishing this reply on the local model" in notices[0]
    assert len([e for e in events if isinstance(e, Egress)]) == 1
    done = events[-1]
    assert done.route == "hybrid" and done.status == "complete" and "finished locally" in done.reason
