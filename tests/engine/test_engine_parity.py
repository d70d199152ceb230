"""The TVM engine against transformers: logits for a prefill and 16 greedy decode steps, in
q0f32 (reference: the same bf16-rounded weights) and q4f32_1 (reference: the dequantized
weights), plus the float16 storages, for Llama and Qwen2, tied and untied heads, with GQA.
These run the float matmul path, which must match to 1e-3; the default int8 path (activations
quantized, as llama.cpp does) has its own, looser checks in test_engine_int8_matmul.py."""

from __future__ import annotations

import numpy as np
import pytest

from engine.loader import open_engine
from engine.scoring import greedy_run
from engine_helpers import reference_logits, worst_difference

PROMPT = "The quick brown fox jumps over the lazy dog. Tandem keeps every conversation"
DECODE_STEPS = 16


@pytest.fixture(autouse=True)
def float_matmul(monkeypatch):
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")

CASES = [
    pytest.param("llama", True, "q0f32", {}, id="llama-tied-q0f32"),
    pytest.param("qwen2", False, "q0f32", {}, id="qwen2-untied-q0f32"),
    pytest.param("llama", False, "q4f32_1", {}, id="llama-untied-q4f32_1"),
    pytest.param("qwen2", True, "q4f32_1", {}, id="qwen2-tied-q4f32_1"),
    # float16 storage runs on the same float32 kernels (q4f16_1 dequantizes without fp16 rounding).
    pytest.param("qwen2", False, "q0f16", {}, id="qwen2-untied-q0f16"),
    pytest.param("llama", True, "q4f16_1", {}, id="llama-tied-q4f16_1"),
    # 80 is not a multiple of the 32-wide quantization group: down_proj has a ragged last group.
    pytest.param("llama", True, "q4f32_1", {"intermediate_size": 80}, id="llama-ragged-group-q4f32_1"),
]


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
    worst = worst_difference(ours, expected)
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


def test_a_prompt_extending_the_cached_one_prefills_only_the_new_tokens(tiny_mlc_model):
    engine = open_engine(tiny_mlc_model("q4f32_1", model_type="llama", tie=True), backend="tvm")
    session = engine.session
    first = engine.tokenizer.encode(PROMPT)
    tokens, _ = greedy_run(session, first, 4)
    follow_up = tokens + engine.tokenizer.encode(" over the lazy dog")
    reused, computed = session.prefill_reusing_cache(follow_up)
    assert session.length == len(follow_up)
    assert computed == len(follow_up) - len(tokens)
    diverging = first[:5] + [7, 8, 9]  # shares only five tokens: the rest is rolled back
    reused_diverging, computed = session.prefill_reusing_cache(diverging)
    assert computed == 3
    for prompt, logits in ((follow_up, reused), (diverging, reused_diverging)):
        session.reset()
        np.testing.assert_allclose(logits, session.prefill(prompt), atol=1e-4)
    engine.close()


ROPE_SCALINGS = [
    pytest.param(
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 16, "rope_theta": 500000.0},
        id="llama3",
    ),
    pytest.param({"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}, id="linear"),
]  # fmt: skip


@pytest.mark.parametrize("rope", ROPE_SCALINGS)
def test_rope_scaling_matches_transformers(rope, tiny_tokenizer_dir, hf_weights_from_mlc, tmp_path):
    import shutil

    import torch
    import transformers
    from tokenizers import Tokenizer

    from engine.convert import convert_hf_checkpoint

    tokenizer_dir = tiny_tokenizer_dir("chatml")
    hf_dir = tmp_path / "hf"
    config = transformers.LlamaConfig(
        vocab_size=Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size(),
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rope_parameters=rope, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(3)
    transformers.LlamaForCausalLM(config).save_pretrained(hf_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, hf_dir / name)
    mlc_dir = tmp_path / "mlc"
    convert_hf_checkpoint(hf_dir, mlc_dir, "q0f32")
    assert read_rope_type(mlc_dir) == rope["rope_type"]

    engine = open_engine(mlc_dir, backend="tvm")
    prompt = engine.tokenizer.encode(PROMPT)
    tokens, ours = greedy_run(engine.session, prompt, 8)
    expected = reference_logits(hf_dir, hf_weights_from_mlc(mlc_dir), tokens)[len(prompt) - 1 :]
    assert worst_difference(ours, expected) < 1e-3
    engine.close()


def read_rope_type(mlc_dir) -> str:
    from engine.config import read_chat_config

    return (read_chat_config(mlc_dir).model_config.rope_scaling or {}).get("rope_type", "default")
