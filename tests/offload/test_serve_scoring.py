"""`tandem serve` as a verifier: vLLM's scoring subset of /v1/completions (token-id prompts,
echo + logprobs, max_tokens 0 or 1) and /tokenize, checked against the engine's own greedy
generation on the same weights."""

from __future__ import annotations

import threading

import httpx
import pytest

from engine.api import GenerationRequest, TokenEvent

TOKEN = "verifier-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MESSAGES = [{"role": "user", "content": "How do I start a new conversation?"}]


@pytest.fixture(scope="module")
def verifier(served_engine):
    from app.server.runner import make_server

    server = make_server(served_engine, "127.0.0.1", 0, token=TOKEN)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def root(server) -> str:
    return server.url.removesuffix("/v1")


def greedy(engine, max_tokens: int) -> list[TokenEvent]:
    events = engine.generate(GenerationRequest(MESSAGES, max_tokens=max_tokens, temperature=0.0, seed=0))
    return [e for e in events if isinstance(e, TokenEvent)]


def score(server, ids: list[int], k: int = 3, max_tokens: int = 1, **extra) -> dict:
    body = {"model": "x", "prompt": ids, "echo": True, "logprobs": k, "max_tokens": max_tokens,
            "temperature": 0, "return_tokens_as_token_ids": True, **extra}
    reply = httpx.post(server.url + "/completions", json=body, headers=AUTH, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_echo_scores_the_engines_own_greedy_continuation(verifier, served_engine):
    prompt = served_engine.prompt_ids(MESSAGES)
    generated = greedy(served_engine, 6)
    ids = prompt + [t.token_id for t in generated]
    logprobs = score(verifier, ids)["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(ids) + 1  # echo, then the one generated token
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert logprobs["tokens"][: len(ids)] == [f"token_id:{i}" for i in ids]
    for offset, event in enumerate(generated):
        position = len(prompt) + offset
        top = logprobs["top_logprobs"][position]
        assert logprobs["token_logprobs"][position] == pytest.approx(event.logprob, abs=1e-3)
        # Greedy: the engine's token is the verifier's best alternative at that position.
        assert max(top, key=top.get) == f"token_id:{event.token_id}"
        assert f"token_id:{event.token_id}" in top and len(top) <= 4
    assert logprobs["text_offset"] == sorted(logprobs["text_offset"])


def test_the_generated_token_is_the_greedy_next_token(verifier, served_engine):
    prompt = served_engine.prompt_ids(MESSAGES)
    first = greedy(served_engine, 1)[0]
    choice = score(verifier, prompt)["choices"][0]
    assert choice["logprobs"]["tokens"][-1] == f"token_id:{first.token_id}"
    # max_tokens 0 scores without generating.
    scored_only = score(verifier, prompt, max_tokens=0)["choices"][0]
    assert len(scored_only["logprobs"]["tokens"]) == len(prompt)


def test_rescoring_after_a_rejected_draft_rolls_back(verifier, served_engine):
    prompt = served_engine.prompt_ids(MESSAGES)
    generated = [t.token_id for t in greedy(served_engine, 4)]
    honest = score(verifier, prompt + generated)["choices"][0]["logprobs"]["token_logprobs"]
    wrong = (generated[1] + 1) % 50
    score(verifier, prompt + generated[:1] + [wrong, wrong])  # a draft that went astray
    again = score(verifier, prompt + generated)["choices"][0]["logprobs"]["token_logprobs"]
    assert again[1:] == pytest.approx(honest[1:], abs=1e-4)


def test_tokenize_matches_the_local_tokenizer(verifier, served_engine):
    probe = "Tandem drafts; the verifier checks. 12345 café 🙂"
    reply = httpx.post(root(verifier) + "/tokenize", json={"prompt": probe, "add_special_tokens": False}, headers=AUTH).json()
    assert reply["tokens"] == served_engine.tokenizer.encode(probe)
    assert reply["count"] == len(reply["tokens"]) and reply["max_model_len"] == served_engine.info.context_window
    chat = httpx.post(root(verifier) + "/tokenize", json={"messages": MESSAGES}, headers=AUTH).json()
    assert chat["tokens"] == served_engine.prompt_ids(MESSAGES)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": [1, 2], "max_tokens": 5}, "max_tokens"),
        ({"prompt": [], "max_tokens": 1}, "prompt"),
        ({"prompt": [1, 2], "max_tokens": 1, "logprobs": 50}, "logprobs"),
        ({"prompt": [1, 2], "max_tokens": 1, "stream": True}, "stream"),
        ({"prompt": [10**7], "max_tokens": 1}, "prompt"),
    ],
)
def test_bad_scoring_requests_name_the_field(verifier, body, param):
    reply = httpx.post(verifier.url + "/completions", json=body, headers=AUTH, timeout=30)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param


def test_scoring_needs_the_token(verifier):
    reply = httpx.post(verifier.url + "/completions", json={"prompt": [1], "max_tokens": 1})
    assert reply.status_code == 401


def test_every_rows_logits_in_one_pass_match_step_by_step_decoding(served_engine):
    import numpy as np

    session = served_engine.session
    assert session.scores_rows  # the library exports prefill_all_logits
    ids = served_engine.prompt_ids(MESSAGES)[:12]
    with served_engine._lock:
        session.reset()
        rows = session.prefill_rows(ids)
        session.reset()
        stepped = np.stack([session.decode(t) for t in ids])
        session.reset()
        last = session.prefill(ids)
    assert rows.shape == (len(ids), stepped.shape[1])
    np.testing.assert_allclose(rows, stepped, atol=1e-3)
    np.testing.assert_allclose(rows[-1], last, atol=1e-4)
