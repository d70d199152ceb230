"""The final hidden state the engine exports with prefill and decode (the router's probe reads it)
against transformers' last hidden state (after the final norm) on a tiny random Llama, and the
FinishEvent that carries it at the end of the prompt and at the end of the answer."""

from __future__ import annotations

import numpy as np
import pytest

from engine.api import FinishEvent, GenerationRequest
from engine.loader import open_engine

PROMPT = "The quick brown fox jumps over the lazy dog. Tandem keeps every conversation"


@pytest.fixture(autouse=True)
def float_matmul(monkeypatch):
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")


def reference_hidden(hf_dir, weights: dict, token_ids: list[int]) -> np.ndarray:
    """transformers' last hidden state (after the model's final norm) at every position."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()}, strict=False)
    with torch.no_grad():
        out = model(torch.tensor([token_ids]), output_hidden_states=True)
    return out.hidden_states[-1][0].float().numpy()


@pytest.fixture(scope="module")
def tiny_llama(tiny_hf_checkpoint, tiny_mlc_model, hf_weights_from_mlc):
    hf_dir = tiny_hf_checkpoint(model_type="llama", tie=True)
    mlc_dir = tiny_mlc_model("q0f32", model_type="llama", tie=True)
    return hf_dir, mlc_dir, hf_weights_from_mlc(mlc_dir)


def test_prefill_and_decode_hidden_state_match_transformers(tiny_llama, monkeypatch):
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")
    hf_dir, mlc_dir, weights = tiny_llama
    engine = open_engine(mlc_dir, backend="tvm")
    session = engine.session
    prompt = engine.tokenizer.encode(PROMPT)
    session.reset()
    ours = []
    logits = session.prefill(prompt)
    ours.append(session.last_hidden())
    tokens = list(prompt)
    for _ in range(4):
        tokens.append(int(np.argmax(logits)))
        logits = session.decode(tokens[-1])
        ours.append(session.last_hidden())
    expected = reference_hidden(hf_dir, weights, tokens)[len(prompt) - 1 :]
    assert all(h is not None and h.shape == (expected.shape[1],) for h in ours)
    worst = max(float(np.abs(mine - theirs).max()) for mine, theirs in zip(ours, expected))
    assert worst < 1e-3
    # Not trivially equal rows: the states differ from one position to the next.
    assert float(np.abs(ours[0] - ours[1]).max()) > 1e-2
    engine.close()


def test_finish_event_carries_the_prompt_end_and_answer_end_states(tiny_llama):
    hf_dir, mlc_dir, weights = tiny_llama
    engine = open_engine(mlc_dir, backend="tvm")
    events = list(engine.generate(GenerationRequest([{"role": "user", "content": "hello there"}],
                                                    max_tokens=5, temperature=0.0)))
    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.hidden is not None
    prompt = engine.prompt_ids([{"role": "user", "content": "hello there"}])
    answer = [e.token_id for e in events[:-1]]
    # A budget-ended answer's last computed state is after its second-to-last token (the last
    # one is sampled but never fed back); a stop token ends it after its last fed token.
    fed = prompt + answer[:-1] if finish.reason == "length" else prompt + answer
    expected = reference_hidden(hf_dir, weights, fed)
    np.testing.assert_allclose(finish.hidden.prompt_end, expected[len(prompt) - 1], atol=1e-3)
    np.testing.assert_allclose(finish.hidden.answer_end, expected[-1], atol=1e-3)
    engine.close()
