"""The KV cache's dtype on the CPU: float16 by default (TANDEM_KV_CACHE=float32 keeps floats), where
Tandem's attention kernels serve the model; float32 where TVM's own kernels would. The same tiny
model run both ways gives the same greedy tokens and nearly the same logits, and the halves are
really in use (the logits are not bit for bit the float32 cache's)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from engine.loader import open_engine  # noqa: E402
from engine.scoring import greedy_run  # noqa: E402
from test_engine_parity import PROMPT  # noqa: E402
HALVES_TOLERANCE = 2e-2
"""Largest logit difference the float16 cache may make over a prefill and 16 steps of the tiny
model (measured 5.2e-3)."""


def greedy_logits(model_dir, monkeypatch, kv_cache: str):
    monkeypatch.setenv("TANDEM_KV_CACHE", kv_cache)
    engine = open_engine(model_dir, backend="tvm")
    try:
        return greedy_run(engine.session, engine.tokenizer.encode(PROMPT), 16)
    finally:
        engine.close()


def test_a_float16_cache_decodes_like_a_float32_one(tiny_mlc_model, monkeypatch):
    monkeypatch.setenv("TANDEM_DEVICE", "cpu")
    model_dir = tiny_mlc_model("q4f32_1", model_type="llama", tie=True)
    tokens16, logits16 = greedy_logits(model_dir, monkeypatch, "float16")
    tokens32, logits32 = greedy_logits(model_dir, monkeypatch, "float32")
    assert tokens16 == tokens32
    difference = float(np.max(np.abs(np.asarray(logits16) - np.asarray(logits32))))
    print(f"float16 against float32 cache: logits apart by up to {difference:.1e}")
    assert 0 < difference < HALVES_TOLERANCE


def test_the_cache_setting_keys_the_library_and_rejects_unknown_values(monkeypatch):
    from engine.errors import EngineError
    from engine.tvm_backend.target import cpu_target

    monkeypatch.delenv("TANDEM_KV_CACHE", raising=False)
    default = cpu_target()
    monkeypatch.setenv("TANDEM_KV_CACHE", "float32")
    floats = cpu_target()
    assert (default.kv_cache, floats.kv_cache) == ("float16", "float32")
    assert default.cache_key != floats.cache_key
    monkeypatch.setenv("TANDEM_KV_CACHE", "int4")
    with pytest.raises(EngineError, match="TANDEM_KV_CACHE.*float16 or float32"):
        cpu_target()


def test_halves_only_where_tandems_kernels_serve_the_model(tiny_chat_config, monkeypatch):
    """A head size the kernels cannot vectorise, or a GPU (TVM's kernels), keeps float32."""
    from engine.tvm_backend.compiler import kv_cache_dtype
    from engine.tvm_backend.target import cpu_target

    monkeypatch.delenv("TANDEM_KV_CACHE", raising=False)
    config = tiny_chat_config().model_config
    target = cpu_target()
    assert kv_cache_dtype(config, target) == "float16"
    odd_heads = dataclasses.replace(config, head_dim=24)
    assert kv_cache_dtype(odd_heads, target) == "float32"
    assert kv_cache_dtype(config, dataclasses.replace(target, kind="cuda", kv_cache="float16")) == "float32"
