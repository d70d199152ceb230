"""The TVM engine against transformers: logits for a prefill and 16 greedy decode steps, in
q0f32 (reference: the same bf16-rounded weights) and q4f32_1 (reference: the dequantized
weights), for Llama and Qwen2, tied and untied heads, with GQA."""

from __future__ import annotations

import numpy as np
import pytest

from engine.loader import open_engine

PROMPT = "The quick brown fox jumps over the lazy dog. Tandem keeps every conversation"
DECODE_STEPS = 16

CASES = [
    pytest.param("llama", True, "q0f32", {}, id="llama-tied-q0f32"),
    pytest.param("qwen2", False, "q0f32", {}, id="qwen2-untied-q0f32"),
    pytest.param("llama", False, "q4f32_1", {}, id="llama-untied-q4f32_1"),
    pytest.param("qwen2", True, "q4f32_1", {}, id="qwen2-tied-q4f32_1"),
    # 80 is not a multiple of the 32-wide quantization group: down_proj has a ragged last group.
    pytest.param("llama", True, "q4f32_1", {"intermediate_size": 80}, id="llama-ragged-group-q4f32_1"),
]


def reference_logits(hf_dir, weights: dict, token_ids: list[int]) -> np.ndarray:
    """transformers' logits at every position, from the MLC directory's own (rounded or
    dequantized) weights, so the comparison tests Tandem's kernels and not the storage."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()}, strict=False)
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].numpy()


def greedy_run(session, prompt: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    session.reset()
    logits = [session.prefill(prompt)]
    tokens = list(prompt)
    for _ in range(steps):
        tokens.append(int(np.argmax(logits[-1])))
        logits.append(session.decode(tokens[-1]))
    return tokens, logits


@pytest.mark.parametrize(("model_type", "tie", "quantization", "shape"), CASES)
def test_prefill_and_decode_logits_match_transformers(
    model_type, tie, quantization, shape, tiny_hf_checkpoint, tiny_mlc_model, hf_weights_from_mlc
):
    hf_dir = tiny_hf_checkpoint(model_type=model_type, tie=tie, **shape)
    mlc_dir = tiny_mlc_model(quantization, model_type=model_type, tie=tie, **shape)
    engine = open_engine(mlc_dir, backend="tvm")
    prompt = engine.tokenizer.encode(PROMPT)
    assert len(prompt) > 8

    tokens, ours = greedy_run(engine.session, prompt, DECODE_STEPS)

    expected = reference_logits(hf_dir, hf_weights_from_mlc(mlc_dir), tokens)[len(prompt) - 1 :]
    assert len(ours) == len(expected) == DECODE_STEPS + 1
    worst = max(float(np.abs(mine - theirs).max()) for mine, theirs in zip(ours, expected))
    assert worst < 1e-3
    assert [int(np.argmax(row)) for row in expected[:-1]] == tokens[len(prompt) :]
    engine.close()


def test_chunked_prefill_equals_one_prefill(tiny_mlc_model):
    engine = open_engine(tiny_mlc_model("q4f32_1", model_type="llama", tie=True), backend="tvm")
    session = engine.session
    prompt = engine.tokenizer.encode(PROMPT)
    session.reset()
    whole = session.prefill(prompt)
    session.prefill_chunk = 5
    session.reset()
    chunked = session.prefill(prompt)
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    engine.close()


def test_decode_logits_equal_a_fresh_prefill_over_the_same_tokens(tiny_mlc_model):
    engine = open_engine(tiny_mlc_model("q0f32", model_type="qwen2", tie=False), backend="tvm")
    session = engine.session
    prompt = engine.tokenizer.encode(PROMPT)[:10]
    tokens, decoded = greedy_run(session, prompt, 6)
    for step in (1, 3, 6):
        session.reset()
        fresh = session.prefill(tokens[: len(prompt) + step])
        np.testing.assert_allclose(decoded[step], fresh, atol=1e-4)
    engine.close()
