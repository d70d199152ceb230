"""engine.gguf reading tiny GGUFs written by the gguf package (every tensor type, llama and
qwen2) back into a ModelConfig and BlockTensors, against numpy dequantization and transformers."""

from __future__ import annotations

import numpy as np
import pytest
from gguf_fixtures import forward_permutation, smollm2_path, smollm2_reference_model, tiny_gguf  # noqa: F401

from engine.gguf import GGUFFile, load_block_tensors, plan_tensors, read_model_config
from engine.gguf.q8 import dequantize_q8_0, quantize_q8_0
from engine.gguf.tensors import unpermute_rows
from engine.layout import logical_tensors

NATIVE = {"F32": "f32", "F16": "f32", "BF16": "f32", "Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_1": "q4_1", "Q4_K": "q4_k"}
REQUANTIZED = ("Q5_K", "Q6_K", "Q2_K", "Q3_K", "Q5_0", "Q5_1")


def dequantize_block(tensor) -> np.ndarray:
    """A BlockTensor back to float32, by the gguf package's numpy dequantizer (same byte layouts)."""
    import gguf
    from gguf.quants import dequantize

    if tensor.format == "f32":
        assert tensor.data.dtype == np.float32
        return np.asarray(tensor.data)
    assert tensor.data.dtype == np.uint8
    values = dequantize(np.asarray(tensor.data), gguf.GGMLQuantizationType[tensor.format.upper()])
    return values.reshape(tensor.shape)


def expected_logical(hf: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The Hugging Face tensors fused into the logical tensor `name`, in row order."""
    module, _, suffix = name.rpartition(".")
    parent, _, leaf = module.rpartition(".")
    if leaf in ("qkv_proj", "c_attn"):
        return np.concatenate([hf[f"{parent}.{p}.{suffix}"] for p in ("q_proj", "k_proj", "v_proj")])
    if leaf == "gate_up_proj":
        return np.concatenate([hf[f"{parent}.{p}.{suffix}"] for p in ("gate_proj", "up_proj")])
    return hf[name]


def test_llama_metadata_becomes_the_model_config(tiny_gguf):
    tiny = tiny_gguf(arch="llama", tie=False, context=4096, rope_theta=50000.0)
    config = read_model_config(tiny.path)
    assert (config.model_type, config.hidden_size, config.intermediate_size) == ("llama", 256, 512)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (2, 4, 2)
    assert (config.head_dim, config.vocab_size, config.max_position_embeddings) == (64, tiny.config["vocab"], 4096)
    assert config.rope_theta == 50000.0 and config.rms_norm_eps == pytest.approx(1e-5)
    assert config.rope_scaling is None and not config.attention_bias and not config.tie_word_embeddings


def test_no_output_tensor_means_tied_embeddings(tiny_gguf):
    assert read_model_config(tiny_gguf(tie=True).path).tie_word_embeddings


@pytest.mark.parametrize("type_name", [*NATIVE, *REQUANTIZED])
def test_every_tensor_type_reads_back_as_numpy_dequantizes_it(tiny_gguf, type_name):
    tiny = tiny_gguf(types=type_name, tie=False)
    config = read_model_config(tiny.path)
    tensors = load_block_tensors(tiny.path, config)
    assert list(tensors) == [t.name for t in logical_tensors(config)]
    for logical in logical_tensors(config):
        tensor = tensors[logical.name]
        assert tensor.shape == logical.shape
        expected = expected_logical(tiny.hf_weights, logical.name)
        if len(logical.shape) == 1:
            assert tensor.format == "f32"
            np.testing.assert_array_equal(tensor.data, expected)
        elif type_name in NATIVE:
            # The file's own blocks, only reordered: dequantizing gives the written values exactly.
            assert tensor.format == NATIVE[type_name]
            np.testing.assert_array_equal(dequantize_block(tensor), expected)
        else:
            # Near-lossless: exactly what quantizing the dequantized values to Q8_0 gives.
            assert tensor.format == "q8_0"
            np.testing.assert_array_equal(np.asarray(tensor.data), quantize_q8_0(expected))
            # Half a step of max|x| / 127, plus the f16 rounding of the scale (2^-11 of 127 steps).
            tolerance = np.abs(expected).reshape(expected.shape[0], -1, 32).max(axis=2) * (1 / 254 + 1 / 2048)
            error = np.abs(dequantize_block(tensor) - expected).reshape(expected.shape[0], -1, 32).max(axis=2)
            assert (error <= tolerance).all()


def test_qwen2_keeps_row_order_and_fuses_biases(tiny_gguf):
    tiny = tiny_gguf(arch="qwen2", types="Q8_0", tie=True)
    config = read_model_config(tiny.path)
    assert config.model_type == "qwen2" and config.attention_bias
    tensors = load_block_tensors(tiny.path, config)
    bias = tensors["model.layers.1.self_attn.c_attn.bias"]
    assert bias.format == "f32" and bias.shape == (512,)
    np.testing.assert_array_equal(bias.data, expected_logical(tiny.hf_weights, "model.layers.1.self_attn.c_attn.bias"))
    qkv = tensors["model.layers.0.self_attn.c_attn.weight"]
    np.testing.assert_array_equal(
        dequantize_block(qkv), expected_logical(tiny.hf_weights, "model.layers.0.self_attn.c_attn.weight")
    )
    assert "lm_head.weight" not in tensors


def test_mixed_formats_in_one_fused_tensor_requantize_and_keep_q8_parts_verbatim(tiny_gguf):
    tiny = tiny_gguf(types={"attn_q": "Q4_0", "attn_k": "Q8_0", "attn_v": "Q6_K", "ffn_gate": "F16", "ffn_up": "F32"})
    config = read_model_config(tiny.path)
    plans = {plan.logical.name: plan for plan in plan_tensors(GGUFFile(tiny.path), config)}
    qkv_plan = plans["model.layers.0.self_attn.qkv_proj.weight"]
    assert (qkv_plan.format, qkv_plan.route, qkv_plan.source_types) == ("q8_0", "requantized", ("Q4_0", "Q8_0", "Q6_K"))
    gate_up = plans["model.layers.0.mlp.gate_up_proj.weight"]
    assert (gate_up.format, gate_up.route) == ("f32", "widened")
    assert gate_up.stored_bytes == 2 * 512 * 256 * 4 and gate_up.source_bytes == 512 * 256 * 6
    tensors = load_block_tensors(tiny.path, config)
    qkv = np.asarray(tensors["model.layers.0.self_attn.qkv_proj.weight"].data)
    k_rows = slice(256, 384)
    gguf = GGUFFile(tiny.path)
    k_file = np.asarray(gguf.tensor("blk.0.attn_k.weight").data)
    np.testing.assert_array_equal(qkv[k_rows], k_file[unpermute_rows(128, 2)])
    expected = expected_logical(tiny.hf_weights, "model.layers.0.self_attn.qkv_proj.weight")
    np.testing.assert_array_equal(qkv, quantize_q8_0(expected))


def test_q8_0_quantizer_matches_the_gguf_package_byte_for_byte():
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, (8, 256)).astype(np.float32)
    values[0, :32] = 0.0  # an all-zero block: scale 0, codes 0
    values[1, :32] = 0.5 / 127 * np.arange(32)  # halves: rounding away from zero
    ours = quantize_q8_0(values)
    np.testing.assert_array_equal(ours, quantize(values, gguf.GGMLQuantizationType.Q8_0))
    np.testing.assert_allclose(dequantize_q8_0(ours, 256), values, atol=np.abs(values).max() / 250)


def test_unpermute_undoes_llama_cpp_permutation():
    for rows, heads in ((256, 4), (128, 2), (576, 9), (192, 3)):
        order = forward_permutation(rows, heads)
        np.testing.assert_array_equal(order[unpermute_rows(rows, heads)], np.arange(rows))


@pytest.fixture(scope="module")
def transformers_reads_tiny_llama(tiny_gguf):
    """transformers' own GGUF loader (it dequantizes and un-permutes Q/K itself) on a tiny llama."""
    import torch
    from transformers import AutoModelForCausalLM

    types = {"attn_q": "Q4_0", "attn_k": "Q4_0", "attn_v": "Q4_0", "token_embd": "Q8_0", "output": "Q4_1"}
    tiny = tiny_gguf(types=types, tie=False, heads=8, kv_heads=2)
    model = AutoModelForCausalLM.from_pretrained(tiny.path.parent, gguf_file=tiny.path.name, dtype=torch.float32)
    return tiny, {name: value.float().numpy() for name, value in model.state_dict().items()}


def test_q_and_k_rows_match_transformers_reading_the_same_file(transformers_reads_tiny_llama):
    tiny, reference = transformers_reads_tiny_llama
    config = read_model_config(tiny.path)
    tensors = load_block_tensors(tiny.path, config)
    q_rows, kv_rows = 8 * 32, 2 * 32
    for layer in range(config.num_hidden_layers):
        qkv = dequantize_block(tensors[f"model.layers.{layer}.self_attn.qkv_proj.weight"])
        q, k, v = np.split(qkv, [q_rows, q_rows + kv_rows])
        prefix = f"model.layers.{layer}.self_attn"
        np.testing.assert_allclose(q, reference[f"{prefix}.q_proj.weight"], atol=1e-6)
        np.testing.assert_allclose(k, reference[f"{prefix}.k_proj.weight"], atol=1e-6)
        np.testing.assert_allclose(v, reference[f"{prefix}.v_proj.weight"], atol=1e-6)
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.1.self_attn.o_proj.weight"):
        np.testing.assert_allclose(dequantize_block(tensors[name]), reference[name], atol=1e-6)


def test_llama3_rope_scaling_is_rebuilt_from_rope_freqs(tiny_gguf):
    scaling = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    scaling["original_max_position_embeddings"] = 8192
    tiny = tiny_gguf(llama3_rope=scaling, rope_theta=500000.0, context=131072)
    config = read_model_config(tiny.path)
    assert config.rope_scaling == {"rope_type": "llama3", **scaling}
    tensors = load_block_tensors(tiny.path, config)
    assert not any("rope_freqs" in name for name in tensors)


def test_the_real_smollm2_file(smollm2_path):
    gguf = GGUFFile(smollm2_path)  # parsed once: its 49152-token vocabulary takes seconds
    config = read_model_config(gguf)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert config.vocab_size == 49152
    assert (config.num_attention_heads, config.num_key_value_heads, config.max_position_embeddings) == (9, 3, 8192)
    assert config.rope_theta == 100000.0 and config.tie_word_embeddings
    plans = plan_tensors(gguf, config)
    routes = {(plan.format, plan.route) for plan in plans}
    assert routes == {("q4_1", "native"), ("q8_0", "native"), ("f32", "native")}
    assert sum(plan.stored_bytes for plan in plans) == sum(plan.source_bytes for plan in plans)
    tensors = load_block_tensors(gguf, config)
    embedding = tensors["model.embed_tokens.weight"]
    assert embedding.format == "q8_0" and embedding.data.shape == (49152, 576 // 32 * 34)
    assert isinstance(embedding.data, np.memmap)  # referenced, not copied


def _assert_same_as_gguf_reader(path, tensors_to_compare: int | None = None) -> None:
    """Our header parser against the gguf package's GGUFReader on the same file."""
    from gguf import GGUFReader

    ours, reference = GGUFFile(path), GGUFReader(path)
    keys = [key for key in reference.fields if not key.startswith("GGUF.")]
    assert list(ours.metadata) == keys
    for key in keys:
        expected = reference.fields[key].contents()
        if isinstance(expected, float):
            assert ours.get(key) == pytest.approx(expected, rel=1e-6), key
        else:
            assert ours.get(key) == expected, key
    assert list(ours.tensors) == [t.name for t in reference.tensors]
    for tensor in reference.tensors[:tensors_to_compare]:
        mine = ours.tensors[tensor.name]
        assert (mine.type_name, mine.n_bytes) == (tensor.tensor_type.name, tensor.n_bytes)
        assert mine.data.dtype == tensor.data.dtype
        np.testing.assert_array_equal(mine.data, tensor.data)


MIXED = {"attn_q": "Q4_K", "ffn_down": "Q6_K", "attn_v": "Q5_0", "token_embd": "Q8_0"}


@pytest.mark.parametrize("types", ["BF16", "F16", MIXED])
def test_header_parser_reads_what_gguf_reader_reads(tiny_gguf, types):
    _assert_same_as_gguf_reader(tiny_gguf(types=types, arch="qwen2", tie=False).path)


def test_header_parser_reads_the_real_file_as_gguf_reader_does(smollm2_path):
    _assert_same_as_gguf_reader(smollm2_path, tensors_to_compare=12)


def test_smollm2_weights_equal_transformers_reading_the_same_file(smollm2_path, smollm2_reference_model):
    """Every weight of the real file, un-permuted and fused by us, equals transformers' own reading."""
    gguf = GGUFFile(smollm2_path)
    config = read_model_config(gguf)
    reference = {name: value.numpy() for name, value in smollm2_reference_model.state_dict().items()}
    q_rows, kv_rows = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    for name, tensor in load_block_tensors(gguf, config).items():
        values = dequantize_block(tensor)
        module, _, suffix = name.rpartition(".")
        parent, _, leaf = module.rpartition(".")
        if leaf == "qkv_proj":
            parts = dict(zip(("q_proj", "k_proj", "v_proj"), np.split(values, [q_rows, q_rows + kv_rows])))
        elif leaf == "gate_up_proj":
            parts = dict(zip(("gate_proj", "up_proj"), np.split(values, 2)))
        else:
            parts = {leaf: values}
        for part, array in parts.items():
            expected = reference[f"{parent}.{part}.{suffix}"]
            np.testing.assert_allclose(array, expected, rtol=1e-6, atol=1e-7, err_msg=name)
