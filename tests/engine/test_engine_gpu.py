"""The GPU path of the tvm backend: device selection (auto falls back to the CPU, a forced absent
device is a clear error) and a real CUDA build of a tiny converted model, compiled for sm_80
without running it (this machine has no GPU); nvcc then turns its CUDA source into a cubin."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

tvm = pytest.importorskip("tvm")

from engine.config import read_chat_config  # noqa: E402
from engine.errors import EngineError  # noqa: E402
from engine.models.llama import weight_kind  # noqa: E402
from engine.tvm_backend.compiler import build_executable, cache_key  # noqa: E402
from engine.tvm_backend.target import (  # noqa: E402
    DEVICE_ENV,
    GPU_KINDS,
    cpu_target,
    gpu_build_target,
    gpu_unavailable_reason,
    host_target,
)

CUDA_BUILD = {"kind": "cuda", "arch": "sm_80"}
ABSENT_GPUS = [kind for kind in GPU_KINDS if gpu_unavailable_reason(kind) is not None]


def _cuda_build_skip_reason() -> str | None:
    if str(tvm.support.libinfo().get("USE_CUDA", "OFF")).upper() == "OFF":
        return "the installed apache-tvm has no CUDA codegen (USE_CUDA=OFF)"
    if shutil.which("nvcc") is None:
        return "nvcc (the CUDA toolkit) is not on PATH"
    return None


def test_auto_falls_back_to_the_cpu_without_a_gpu(monkeypatch):
    if len(ABSENT_GPUS) < len(GPU_KINDS):
        pytest.skip("this machine has a usable GPU, so auto picks it")
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    target = host_target()
    assert target.kind == "cpu" and not target.is_gpu
    assert target.target.kind.name == "llvm"
    assert target.label.startswith("cpu (")


def test_forcing_the_cpu_works_whatever_the_machine(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert host_target().kind == "cpu"
    assert host_target("CPU").kind == "cpu"


@pytest.mark.parametrize("kind", ABSENT_GPUS or ["none-absent"])
def test_forcing_an_absent_gpu_is_a_clear_error(monkeypatch, kind):
    if kind == "none-absent":
        pytest.skip("every GPU kind is usable here")
    monkeypatch.setenv(DEVICE_ENV, kind)
    with pytest.raises(EngineError, match=rf"The {kind} device was asked for, but .*{DEVICE_ENV}"):
        host_target()


def test_forcing_an_absent_gpu_fails_before_any_compile(monkeypatch, tiny_mlc_model):
    if "cuda" not in ABSENT_GPUS:
        pytest.skip("this machine has a usable CUDA GPU")
    from engine.loader import open_engine

    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(EngineError, match="cuda device was asked for"):
        open_engine(tiny_mlc_model("q0f32"), backend="tvm")


def test_an_unknown_device_is_named(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(EngineError, match="Unknown device 'tpu'.*auto, cpu, cuda"):
        host_target()


def test_cpu_and_cuda_builds_never_share_a_cache_entry(tiny_chat_config):
    model = tiny_chat_config("q4f16_1").model_config
    cpu = cache_key(model, "q4h", cpu_target())
    sm80 = cache_key(model, "q4h", gpu_build_target(CUDA_BUILD))
    sm90 = cache_key(model, "q4h", gpu_build_target({"kind": "cuda", "arch": "sm_90"}))
    assert len({cpu, sm80, sm90}) == 3


def test_a_cpu_target_is_not_a_gpu_build_target():
    with pytest.raises(EngineError, match="Not a GPU target kind"):
        gpu_build_target({"kind": "llvm"})


@pytest.mark.skipif(_cuda_build_skip_reason() is not None, reason=str(_cuda_build_skip_reason()))
def test_a_converted_model_compiles_for_cuda(tiny_mlc_model, tmp_path):
    """q4f16_1: the dequantize + matmul path, scheduled by dlight's GEMV (decode) and Matmul
    (prefill) rules, and the KV cache's GPU attention kernels, in one CUDA module."""
    chat_config = read_chat_config(tiny_mlc_model("q4f16_1"))
    model = chat_config.model_config
    executable, params = build_executable(model, weight_kind("q4f16_1"), gpu_build_target(CUDA_BUILD))

    # GPU weights keep MLC's row-major layout (output tiles of one row).
    shapes = {name: shape for name, shape, _ in params}
    assert shapes["model.layers.0.mlp.down_proj.q_weight"] == (model.hidden_size, model.intermediate_size // 8, 1)

    source = _cuda_module(executable.mod).inspect_source()
    kernels = set(re.findall(r"__global__ void (?:__launch_bounds__\((\d+)\) )?(\w+)_kernel\(", source))
    names = {name for _, name in kernels}
    assert "batch_decode_paged_kv" in names and "batch_prefill_paged_kv" in names
    decode_linear = [int(bound) for bound, name in kernels if re.search(r"q4h_decode_\d+x\d+$", name)]
    prefill_linear = [int(bound) for bound, name in kernels if re.search(r"q4h_prefill_\d+x\d+$", name)]
    assert decode_linear and prefill_linear
    # dlight's fallback rule launches the widest blocks (1024): the linears got real GPU rules.
    assert max(decode_linear + prefill_linear) < 1024
    assert "__shfl" in source  # GEMV's cross-thread reduction

    (tmp_path / "model.cu").write_text(source)
    compiled = subprocess.run(
        ["nvcc", "-cubin", "-arch=sm_80", "-o", str(tmp_path / "model.cubin"), str(tmp_path / "model.cu")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stderr[-2000:]

    executable.export_library(str(tmp_path / "model.so"))
    assert b"batch_decode_paged_kv_kernel" in (tmp_path / "model.so").read_bytes()


def _cuda_module(module):
    if module.kind == "cuda":
        return module
    for child in module.imports:
        found = _cuda_module(child)
        if found is not None:
            return found
    return None
