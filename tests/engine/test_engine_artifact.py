"""Tensor caches: write -> read round trips, bf16 records, md5, and every corrupt-file case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.artifact import (
    check_params,
    decode_bf16,
    encode_bf16,
    read_tensor_cache,
    write_tensor_cache,
)
from engine.config import ChatConfig
from engine.errors import ModelFileError
from engine.layout import stored_specs
from engine.quantization import QUANTIZATIONS


def sample_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a.weight": rng.normal(size=(40, 33)).astype(np.float32),
        "b.q_weight": rng.integers(0, 2**32, size=(16, 8), dtype=np.uint32),
        "b.q_scale": rng.normal(size=(16, 2)).astype(np.float16),
        "c.bias": rng.normal(size=(7,)).astype(np.float16),
    }


def test_round_trip_keeps_every_array_and_splits_shards(tmp_path):
    params = sample_params()
    write_tensor_cache(tmp_path, params.items(), float32_as_bf16=False, shard_cap_bytes=4096)
    assert len(list(tmp_path.glob("params_shard_*.bin"))) >= 2
    loaded = read_tensor_cache(tmp_path)
    assert list(loaded) == list(params)
    for name, array in params.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def test_float32_records_are_stored_as_bf16_and_decoded(tmp_path):
    params = sample_params()
    write_tensor_cache(tmp_path, params.items())
    index = json.loads((tmp_path / "tensor-cache.json").read_text())
    record = index["records"][0]["records"][0]
    assert record["format"] == "f32-to-bf16" and record["dtype"] == "float32"
    assert record["nbytes"] == 40 * 33 * 2
    loaded = read_tensor_cache(tmp_path)
    expected = decode_bf16(encode_bf16(params["a.weight"]))
    np.testing.assert_array_equal(loaded["a.weight"], expected)
    assert np.abs(loaded["a.weight"] - params["a.weight"]).max() <= np.abs(params["a.weight"]).max() * 2**-8
    np.testing.assert_array_equal(loaded["b.q_weight"], params["b.q_weight"])


def test_bf16_encoding_rounds_to_nearest_even():
    values = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, np.finfo(np.float32).max], dtype=np.float32)
    decoded = decode_bf16(encode_bf16(values))
    assert decoded[0] == 1.0
    assert decoded[1] == 1.0  # a tie rounds to the even mantissa
    assert decoded[2] == 1.0 + 4 * 2**-8
    assert decoded[3] == -2.5
    assert np.isfinite(decoded[4])  # out of bf16's range: truncated, not rounded to inf


def test_legacy_ndarray_cache_json_is_read(tmp_path):
    params = sample_params()
    write_tensor_cache(tmp_path, params.items())
    (tmp_path / "tensor-cache.json").rename(tmp_path / "ndarray-cache.json")
    assert set(read_tensor_cache(tmp_path)) == set(params)


def test_missing_tensor_cache_names_the_file(tmp_path):
    with pytest.raises(ModelFileError, match="tensor-cache.json is missing"):
        read_tensor_cache(tmp_path)


def test_truncated_shard_names_the_file(tmp_path):
    write_tensor_cache(tmp_path, sample_params().items())
    shard = tmp_path / "params_shard_0.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ModelFileError, match=r"params_shard_0\.bin is truncated"):
        read_tensor_cache(tmp_path)


def test_md5_mismatch_names_the_file(tmp_path):
    write_tensor_cache(tmp_path, sample_params().items())
    shard = tmp_path / "params_shard_0.bin"
    data = bytearray(shard.read_bytes())
    data[5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"params_shard_0\.bin is corrupt.*md5"):
        read_tensor_cache(tmp_path)
    assert read_tensor_cache(tmp_path, verify_md5=False)  # the check is what caught it


def test_missing_shard_names_the_file(tmp_path):
    write_tensor_cache(tmp_path, sample_params().items())
    (tmp_path / "params_shard_0.bin").unlink()
    with pytest.raises(ModelFileError, match=r"params_shard_0\.bin is missing"):
        read_tensor_cache(tmp_path)


def test_unknown_dtype_names_the_file(tmp_path):
    write_tensor_cache(tmp_path, sample_params().items())
    index_path = tmp_path / "tensor-cache.json"
    index = json.loads(index_path.read_text())
    index["records"][0]["records"][0]["dtype"] = "float8_e4m3fn"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match=r"params_shard_0\.bin.*float8_e4m3fn"):
        read_tensor_cache(tmp_path)


def fake_params(chat_config: ChatConfig) -> dict[str, np.ndarray]:
    specs = stored_specs(chat_config.model_config, QUANTIZATIONS[chat_config.quantization])
    return {name: np.zeros(spec.shape, dtype=spec.dtype) for name, spec in specs.items()}


def test_expected_names_follow_mlc(tiny_chat_config):
    names = set(fake_params(tiny_chat_config()))
    assert "model.embed_tokens.q_weight" in names and "lm_head.q_scale" in names
    assert "model.layers.1.self_attn.c_attn.bias" in names  # qwen2's fused qkv carries a bias
    assert "model.layers.0.mlp.gate_up_proj.q_weight" in names
    assert "model.norm.weight" in names


def test_shape_mismatch_names_the_file_and_tensor(tiny_chat_config):
    chat_config = tiny_chat_config()
    params = fake_params(chat_config)
    check_params(params, chat_config, source="tensor-cache.json")
    params["model.layers.0.mlp.down_proj.q_scale"] = np.zeros((64, 2), dtype=np.float16)
    expected = r"tensor-cache.json: model.layers.0.mlp.down_proj.q_scale is float16\[64, 2\]"
    with pytest.raises(ModelFileError, match=expected):
        check_params(params, chat_config, source="tensor-cache.json")


def test_missing_tensor_is_named(tiny_chat_config):
    chat_config = tiny_chat_config()
    params = fake_params(chat_config)
    del params["lm_head.q_weight"]
    with pytest.raises(ModelFileError, match="lacks lm_head.q_weight"):
        check_params(params, chat_config, source="tensor-cache.json")


def test_tvm_reads_what_we_write_and_we_read_what_tvm_writes(tmp_path):
    """apache-tvm's own tensor-cache helpers (what MLC's tools use) agree with ours both ways."""
    tvm = pytest.importorskip("tvm")
    from tvm.contrib import tvmjs

    params = sample_params()
    ours = tmp_path / "ours"
    write_tensor_cache(ours, params.items())
    loaded, _ = tvmjs.load_tensor_cache(str(ours), tvm.cpu())
    for name, array in params.items():
        expected = decode_bf16(encode_bf16(array)) if array.dtype == np.float32 else array
        np.testing.assert_array_equal(loaded[name].numpy(), expected, err_msg=name)

    theirs = tmp_path / "theirs"
    tvmjs.dump_tensor_cache(params, str(theirs), encode_format="f32-to-bf16", show_progress=False)
    ours_again = read_tensor_cache(theirs)
    for name, array in params.items():
        np.testing.assert_array_equal(ours_again[name], loaded[name].numpy(), err_msg=name)
