"""`tandem serve` as a peer: the real local engine behind the OpenAI-compatible API, checked with
Tandem's own OpenAI provider as the client (and raw HTTP where the wire format itself matters)."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from engine.api import GenerationRequest, TokenEvent
from offload.errors import AuthError, BadRequest
from offload.network import Network
from offload.providers import OpenAICompatible, StreamEnd, TextDelta, Timeouts

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "peer-token-0123456789"
MESSAGES = [{"role": "user", "content": "How do I start a new conversation?"}]
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def peer(served_engine):
    from app.server.runner import make_server

    server = make_server(served_engine, "127.0.0.1", 0, token=TOKEN)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def client_for(server, key: str | None = TOKEN) -> OpenAICompatible:
    return OpenAICompatible(server.url, key, name="peer", network=Network(), timeouts=Timeouts(connect=5, read=30))


def local_greedy_text(engine, max_tokens: int) -> str:
    events = engine.generate(GenerationRequest(MESSAGES, max_tokens=max_tokens, temperature=0.0, seed=0))
    return "".join(e.text for e in events if isinstance(e, TokenEvent))


def test_serve_binds_loopback_by_default():
    from app.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.token) == ("127.0.0.1", None)


def test_models_lists_the_served_model(peer, served_engine):
    listed = httpx.get(peer.url + "/models", headers=AUTH).json()
    assert [m["id"] for m in listed["data"]] == [served_engine.info.model_id]


def test_provider_streams_the_same_reply_the_engine_gives_locally(peer, served_engine):
    events = list(client_for(peer).stream_chat(MESSAGES, served_engine.info.model_id, 8, 0.0))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert text == local_greedy_text(served_engine, 8)
    assert end.usage.prompt_tokens == served_engine.count_prompt_tokens(MESSAGES)
    assert 0 <= end.usage.completion_tokens <= 8
    assert end.finish_reason in ("stop", "length")


def test_non_streaming_reply_carries_logprobs_and_usage(peer, served_engine):
    body = {"messages": MESSAGES, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 3}
    reply = httpx.post(peer.url + "/chat/completions", json=body, headers=AUTH, timeout=30).json()
    choice = reply["choices"][0]
    tokens = choice["logprobs"]["content"]
    assert choice["message"]["content"] == "".join(t["token"] for t in tokens) == local_greedy_text(served_engine, 6)
    for token in tokens:
        assert token["logprob"] <= 0
        assert 1 <= len(token["top_logprobs"]) <= 3
        alternatives = [alt["logprob"] for alt in token["top_logprobs"]]
        assert alternatives == sorted(alternatives, reverse=True)
        assert token["logprob"] == pytest.approx(alternatives[0], abs=1e-5)  # greedy picks the top one
    usage = reply["usage"]
    assert len(tokens) <= usage["completion_tokens"] <= len(tokens) + 1  # a stop token may count
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_stream_wire_format_ends_with_usage_and_done(peer):
    body = {"messages": MESSAGES, "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", peer.url + "/chat/completions", json=body, headers=AUTH, timeout=30) as response:
        assert response.headers["content-type"] == "text/event-stream"
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 4


def test_missing_or_wrong_token_is_401(peer):
    bare = httpx.get(peer.url + "/models")
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert "token" in bare.json()["error"]["message"]
    with pytest.raises(AuthError):
        list(client_for(peer, key="wrong-token").stream_chat(MESSAGES, "m", 4, 0.0))


def test_a_refused_request_leaves_the_connection_usable(peer):
    with httpx.Client(timeout=30) as client:  # one keep-alive connection for both requests
        refused = client.post(peer.url + "/chat/completions", json={"messages": MESSAGES})
        served = client.post(peer.url + "/chat/completions", json={"messages": MESSAGES, "max_tokens": 2}, headers=AUTH)
    assert (refused.status_code, served.status_code) == (401, 200)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"messages": []}', "messages"),
        (b'{"messages": [{"role": "wizard", "content": "hi"}]}', "messages"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 5}', "temperature"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}', "top_logprobs"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "min_p": 2}', "min_p"),
    ],
)
def test_bad_requests_get_a_400_json_error(peer, body, param):
    reply = httpx.post(peer.url + "/chat/completions", content=body, headers=AUTH)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["message"] and error["param"] == param


def test_a_prompt_over_the_context_window_is_a_clear_400(peer, served_engine):
    long = [{"role": "user", "content": "word " * (served_engine.info.context_window * 2)}]
    reply = httpx.post(peer.url + "/chat/completions", json={"messages": long}, headers=AUTH, timeout=30)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "context_length_exceeded"
    with pytest.raises(BadRequest, match="context window"):
        list(client_for(peer).stream_chat(long, "m", 4, 0.0))


def test_a_client_leaving_mid_stream_frees_the_engine_for_the_next(peer):
    body = {"messages": MESSAGES, "max_tokens": 64, "stream": True}
    with httpx.stream("POST", peer.url + "/chat/completions", json=body, headers=AUTH, timeout=30) as response:
        next(response.iter_lines())
    events = list(client_for(peer).stream_chat(MESSAGES, "m", 2, 0.0))
    assert isinstance(events[-1], StreamEnd)


def test_cli_serves_until_interrupted(served_model_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", "0", "--model", str(served_model_dir), "--token", TOKEN],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert select.select([process.stdout], [], [], 60)[0], "tandem serve printed nothing within 60 s"
        line = process.stdout.readline()
        assert line.startswith("Serving "), process.stderr.read() if process.poll() is not None else line
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/models", headers=AUTH, timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


def test_settings_a_client_leaves_out_are_the_local_models_own():
    from app.server.protocol import parse_chat

    plain = parse_chat(json.dumps({"messages": MESSAGES}).encode()).request
    assert (plain.temperature, plain.top_p, plain.top_k, plain.min_p, plain.repetition_penalty) == (None,) * 5
    body = {"messages": MESSAGES, "temperature": 0, "top_p": 0.9, "top_k": -1, "min_p": 0.05, "repetition_penalty": 1.1}
    given = parse_chat(json.dumps(body).encode()).request
    assert (given.temperature, given.top_p, given.top_k, given.min_p, given.repetition_penalty) == (0.0, 0.9, 0, 0.05, 1.1)
