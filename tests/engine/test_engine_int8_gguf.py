"""llama.cpp's 4-bit blocks on the int8 path: the int8 kernel (code * scale + min per group of
32) on q4_0, q4_1 and q4_k weights, for each variant this CPU can run, decode and prefill rows,
against the same int8 arithmetic in numpy and against the `gguf` package's dequantization of
the same bytes; every variant (those this CPU lacks too) built for the stored-min form; and
q4_k's block codes, float kernel and GPU form against the same dequantization."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
gguf = pytest.importorskip("gguf")

from engine.block_codes import BlockArrays  # noqa: E402
from engine.block_tensors import BlockTensor  # noqa: E402
from test_engine_int8_matmul import BUILD_ONLY  # noqa: E402

QTYPES = {"q4_0": gguf.GGMLQuantizationType.Q4_0, "q4_1": gguf.GGMLQuantizationType.Q4_1}
FLOAT_TOLERANCE = 0.02
"""int8 rounding of x moves y by at most about 1% of its largest value on these shapes."""


def block_tensor(kind: str, weight: np.ndarray) -> BlockTensor:
    return BlockTensor(kind, weight.shape, gguf.quants.quantize(weight, QTYPES[kind]))


def dequantized(tensor: BlockTensor) -> np.ndarray:
    return gguf.quants.dequantize(tensor.data, QTYPES[tensor.format]).reshape(tensor.shape)


def int8_reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The kernel's arithmetic in numpy: x quantized per group of 32 (xs = max|x| / 127, xq =
    round(x * 127 / max|x|) to even), then y = x_dequantized @ W.T, which is exactly
    sum over groups of scale * xs * sum(code * xq) + min * xs * sum(xq)."""
    rows, k_in = x.shape
    grouped = x.reshape(rows, k_in // 32, 32)
    amax = np.abs(grouped).max(axis=2, keepdims=True)
    inverse = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    xq = np.rint(grouped * inverse)
    x_int8 = (xq * (amax / np.float32(127))).reshape(rows, k_in)
    return x_int8.astype(np.float64) @ weight.astype(np.float64).T


def run_int8(target, isa: str, tensor: BlockTensor, x: np.ndarray) -> np.ndarray:
    from engine.tvm_backend.int8_kernels import int8_linear_kernel, int8_tile
    from engine.tvm_backend.kernels import LinearShape
    from engine.tvm_backend.repack import repacked_params

    n_out, k_in = tensor.shape
    shape = LinearShape(tensor.format, n_out, k_in, int8_tile(n_out), "int8")
    phase = "decode" if x.shape[0] == 1 else "prefill"
    kernel = int8_linear_kernel(shape, phase, isa).with_attr("global_symbol", "linear")
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel}), target=target)
    wanted = [(f"w.{suffix}", spec, dtype) for suffix, (spec, dtype) in shape.weight_shapes().items()]
    weights = list(repacked_params(BlockArrays({"w.weight": tensor}), wanted, tied=False))
    out = tvm.runtime.tensor(np.zeros((x.shape[0], n_out), np.float32))
    library["linear"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights), out)
    return out.numpy()


@pytest.mark.parametrize("kind", list(QTYPES))
@pytest.mark.parametrize(("n_out", "k_in"), [(64, 96), (48, 128)], ids=["tile32", "tile16"])
@pytest.mark.parametrize("rows", [1, 3, 9], ids=["decode", "prefill-3", "prefill-9"])
def test_int8_kernel_matches_numpy_on_gguf_blocks(host_target, isa, kind, n_out, k_in, rows):
    rng = np.random.default_rng(n_out + k_in + rows)
    weight = rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32)
    weight[:, :32] += 0.04  # an off-centre block: q4_1's min differs from -8 * scale
    tensor = block_tensor(kind, weight)
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero group quantizes to zeros, not NaN
    x[-1, 37] = 40.0  # an outlier sets its group's activation scale

    y = run_int8(host_target, isa, tensor, x)

    reference = dequantized(tensor)
    same_math = int8_reference(x, reference)
    np.testing.assert_allclose(y, same_math, rtol=0, atol=2e-5 * np.abs(same_math).max())
    exact = x @ reference.T
    assert np.abs(y - exact).max() < FLOAT_TOLERANCE * np.abs(exact).max()


@pytest.mark.parametrize("kind", list(QTYPES))
def test_gguf_4bit_kinds_take_the_int8_layout(kind):
    from engine.tvm_backend.linear import cpu_matmul, linear_shape

    with cpu_matmul("int8"):
        shape = linear_shape(kind, 64, 64)
    assert shape.matmul == "int8"
    stored = shape.weight_shapes()
    assert stored["q_weight"][1] == "uint8"
    # q4_0's min is -8 * scale: folded into the integer dot, not stored (18 bytes a block, as in the file)
    assert ("q_min" in stored) == (kind == "q4_1")


@pytest.mark.parametrize("variant", list(BUILD_ONLY))
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_every_variant_builds_the_stored_min_form(variant, phase):
    from engine.tvm_backend.int8_kernels import int8_linear_kernel
    from engine.tvm_backend.kernels import LinearShape

    spec, instructions = BUILD_ONLY[variant]
    target = tvm.target.Target(spec)
    kernel = int8_linear_kernel(LinearShape("q4_1", 64, 96, 32, "int8"), phase, variant)
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel.with_attr("global_symbol", "linear")}), target=target)
    assembly = library.inspect_source("asm")
    for instruction in instructions:
        assert re.search(instruction, assembly), instruction


# Q4_K: super-blocks of 256, eight groups of 32 each with scale d * sc_j and min -dmin * m_j.
# The gguf package cannot write them: q4_k_writer does (a numpy reference writer).


def q4_k_tensor(weight: np.ndarray) -> BlockTensor:
    from q4_k_writer import quantize_q4_k

    return BlockTensor("q4_k", weight.shape, quantize_q4_k(weight))


def q4_k_dequantized(tensor: BlockTensor) -> np.ndarray:
    return gguf.quants.dequantize(np.asarray(tensor.data), gguf.GGMLQuantizationType.Q4_K).reshape(tensor.shape)


def test_q4_k_block_codes_dequantize_as_the_gguf_package_does():
    from engine.block_codes import block_arrays, dequantize_blocks

    rng = np.random.default_rng(5)
    weight = rng.normal(0, 0.05, (16, 512)).astype(np.float32)
    weight[3, 256:] = 0.0  # an all-zero super-block
    weight[4] += 0.1  # all positive: every min 0
    tensor = q4_k_tensor(weight)
    np.testing.assert_array_equal(dequantize_blocks(tensor), q4_k_dequantized(tensor))
    arrays = block_arrays(tensor, "w")
    assert arrays["w.q_scale"].dtype == np.float32 and arrays["w.q_scale"].shape == (16, 16)
    assert arrays["w.q_min"].shape == (16, 16) and (arrays["w.q_min"] <= 0).all()


@pytest.mark.parametrize(("n_out", "k_in"), [(64, 256), (48, 512)], ids=["tile32", "tile16"])
@pytest.mark.parametrize("rows", [1, 9], ids=["decode", "prefill-9"])
def test_int8_kernel_matches_numpy_on_q4_k(host_target, isa, n_out, k_in, rows):
    rng = np.random.default_rng(n_out + k_in + rows)
    tensor = q4_k_tensor(rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32))
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)

    y = run_int8(host_target, isa, tensor, x)

    reference = q4_k_dequantized(tensor)
    same_math = int8_reference(x, reference)
    np.testing.assert_allclose(y, same_math, rtol=0, atol=2e-5 * np.abs(same_math).max())
    exact = x @ reference.T
    assert np.abs(y - exact).max() < FLOAT_TOLERANCE * np.abs(exact).max()


@pytest.mark.parametrize("rows", [1, 9], ids=["decode", "prefill-9"])
def test_float_kernel_matches_numpy_on_q4_k(host_target, rows):
    from engine.tvm_backend.kernels import LinearShape, linear_kernel, output_tile
    from engine.tvm_backend.repack import repacked_params

    rng = np.random.default_rng(rows)
    n_out, k_in = 48, 512
    tensor = q4_k_tensor(rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32))
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    with host_target:
        shape = LinearShape("q4_k", n_out, k_in, output_tile(n_out))
        kernel = linear_kernel(shape, "decode" if rows == 1 else "prefill").with_attr("global_symbol", "linear")
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel}), target=host_target)
    wanted = [(f"w.{name}", spec, dtype) for name, (spec, dtype) in shape.weight_shapes().items()]
    weights = list(repacked_params(BlockArrays({"w.weight": tensor}), wanted, tied=False))
    out = tvm.runtime.tensor(np.zeros((rows, n_out), np.float32))
    library["linear"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights), out)
    expected = x @ q4_k_dequantized(tensor).T
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_gpu_form_matches_numpy_on_q4_k(host_target):
    """plain_linear (what a GPU build compiles) run here on the CPU: its math, not its speed."""
    from engine.tvm_backend.kernels import LinearShape
    from engine.tvm_backend.linear import GPU_TILE, plain_linear
    from engine.tvm_backend.repack import repacked_params

    n_out, k_in, rows = 24, 256, 5
    rng = np.random.default_rng(11)
    tensor = q4_k_tensor(rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32))
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    shape = LinearShape("q4_k", n_out, k_in, GPU_TILE)
    wanted = [(f"w.{name}", spec, dtype) for name, (spec, dtype) in shape.weight_shapes().items()]
    weights = list(repacked_params(BlockArrays({"w.weight": tensor}), wanted, tied=False))
    row_count = tvm.tirx.Var("rows", "int64")
    x_in = tvm.te.placeholder((row_count, k_in), "float32", name="x")
    w_in = [tvm.te.placeholder(w.shape, str(w.dtype), name=f"w{i}") for i, w in enumerate(weights)]
    function = tvm.te.create_prim_func([x_in, *w_in, plain_linear(shape, x_in, *w_in)])
    library = tvm.compile(function, target=host_target)
    out = tvm.runtime.tensor(np.zeros((rows, n_out), np.float32))
    library(tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights), out)
    np.testing.assert_allclose(out.numpy(), x @ q4_k_dequantized(tensor).T, rtol=1e-5, atol=1e-5)
