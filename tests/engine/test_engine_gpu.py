"""The GPU path of the tvm backend: device selection (auto falls back to the CPU, a forced absent
device is a clear error), the GPU form of the linear layers, and real CUDA and Metal builds of a
tiny converted model, compiled without running them (no GPU here); nvcc then turns the CUDA
source into a cubin for sm_80."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from engine.config import read_chat_config  # noqa: E402
from engine.errors import EngineError  # noqa: E402
from engine.models.llama import weight_kind  # noqa: E402
from engine.quantization import quantize_q4, unpack_nibbles  # noqa: E402
from engine.tvm_backend.compiler import build_executable, cache_key  # noqa: E402
from engine.tvm_backend.kernels import LinearShape  # noqa: E402
from engine.tvm_backend.linear import GPU_TILE, plain_linear  # noqa: E402
from engine.tvm_backend.repack import repacked_params  # noqa: E402
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


@pytest.mark.parametrize("kind", ["q0", "q4", "q4h"])
def test_the_gpu_linear_form_computes_x_times_w_transposed(kind):
    """The plain form dlight schedules on a GPU, compiled here for the CPU (its math does not
    depend on the schedule), on weights repacked from MLC's layout; K = 80 leaves a ragged group."""
    n_out, k_in, rows = 24, 80, 5
    rng = np.random.default_rng(7)
    weight = rng.normal(size=(n_out, k_in)).astype("float32")
    x = rng.normal(size=(rows, k_in)).astype("float32")
    shape = LinearShape(kind, n_out, k_in, GPU_TILE)
    if kind == "q0":
        mlc = {"w.weight": weight}
        reference = weight
    else:
        q_weight, q_scale = quantize_q4(weight, "float16" if kind == "q4h" else "float32")
        mlc = {"w.q_weight": q_weight, "w.q_scale": q_scale}
        codes = unpack_nibbles(q_weight)[:, :k_in].astype("float32") - 7
        reference = codes * np.repeat(q_scale.astype("float32"), 32, axis=1)[:, :k_in]
    wanted = [(f"w.{name}", spec_shape, dtype) for name, (spec_shape, dtype) in shape.weight_shapes().items()]
    weights = list(repacked_params(mlc, wanted, tied=False))

    row_count = tvm.tirx.Var("rows", "int64")
    x_in = tvm.te.placeholder((row_count, k_in), "float32", name="x")
    w_in = [tvm.te.placeholder(w.shape, str(w.dtype), name=f"w{i}") for i, w in enumerate(weights)]
    y = plain_linear(shape, x_in, *w_in)
    function = tvm.te.create_prim_func([x_in, *w_in, y])
    library = tvm.compile(function, target=tvm.target.Target.from_device(tvm.cpu()))
    device = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros((rows, n_out), "float32"), device)
    library(tvm.runtime.tensor(x, device), *(tvm.runtime.tensor(w, device) for w in weights), out)
    np.testing.assert_allclose(out.numpy(), x @ reference.T, rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_q4_model(tiny_mlc_model):
    return read_chat_config(tiny_mlc_model("q4f16_1")).model_config


@pytest.mark.skipif(_cuda_build_skip_reason() is not None, reason=str(_cuda_build_skip_reason()))
def test_a_converted_model_compiles_for_cuda(tiny_q4_model, tmp_path):
    """q4f16_1: the dequantize + matmul path, scheduled by dlight's GEMV (decode) and Matmul
    (prefill) rules, and the KV cache's GPU attention kernels, in one CUDA module."""
    executable, params = build_executable(tiny_q4_model, weight_kind("q4f16_1"), gpu_build_target(CUDA_BUILD))
    _assert_gpu_layout(tiny_q4_model, params)

    source = _device_module(executable.mod, "cuda").inspect_source()
    kernels = dict(
        (name, int(bound))
        for bound, name in re.findall(r"__global__ void __launch_bounds__\((\d+)\) (\w+)_kernel\(", source)
    )
    _assert_model_kernels(set(kernels))
    # dlight's fallback rule launches the widest blocks (1024): the linears got real GPU rules.
    assert max(bound for name, bound in kernels.items() if re.fullmatch(r"q4h_\w+_\d+x\d+", name)) < 1024
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


@pytest.mark.skipif(
    tvm.get_global_func("target.build.metal", allow_missing=True) is None,
    reason="the installed apache-tvm has no Metal codegen",
)
def test_a_converted_model_compiles_for_metal(tiny_q4_model):
    """Metal source only (no Metal compiler here): dlight's Matmul rule is left out on metal,
    where its simdgroup path crashes on float32 (see pipeline.gpu_rules)."""
    executable, params = build_executable(tiny_q4_model, weight_kind("q4f16_1"), gpu_build_target({"kind": "metal"}))
    _assert_gpu_layout(tiny_q4_model, params)
    source = _device_module(executable.mod, "metal").inspect_source()
    _assert_model_kernels(set(re.findall(r"kernel void (\w+)_kernel\(", source)))


def _assert_gpu_layout(model, params) -> None:
    """GPU weights keep MLC's row-major layout (output tiles of one row)."""
    shapes = {name: shape for name, shape, _ in params}
    assert shapes["model.layers.0.mlp.down_proj.q_weight"] == (model.hidden_size, model.intermediate_size // 8, 1)


def _assert_model_kernels(names: set[str]) -> None:
    assert {"batch_decode_paged_kv", "batch_prefill_paged_kv", "rms_norm"} <= names
    assert any(re.fullmatch(r"q4h_decode_\d+x\d+", name) for name in names)
    assert any(re.fullmatch(r"q4h_prefill_\d+x\d+", name) for name in names)


def _device_module(module, kind: str):
    if module.kind == kind:
        return module
    for child in module.imports:
        found = _device_module(child, kind)
        if found is not None:
            return found
    return None
