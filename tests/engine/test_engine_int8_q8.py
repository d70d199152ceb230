"""The int8-activation kernels for 8-bit codes (engine/tvm_backend/int8_kernels_q8.py): each
variant this CPU runs against the same int8 arithmetic in numpy (exact up to float sums) and
against the `gguf` package's dequantization of GGUF blocks, extreme codes without saturation,
and every variant (ARM's too) compiled to the instructions it is named for."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
gguf = pytest.importorskip("gguf")

from engine.block_codes import BlockArrays  # noqa: E402
from engine.block_tensors import BlockTensor  # noqa: E402
from engine.tvm_backend.kernels import LinearShape, has_min, weight_group  # noqa: E402
from engine.tvm_backend.repack import repacked_params  # noqa: E402

BUILD_ONLY = {
    "avx512-vnni": ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"}, [r"vpdpbusd\s+%zmm"]),
    "avx-vnni": ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "alderlake"}, [r"\{vex\}\s+vpdpbusd\s+%ymm"]),
    "avx2": (
        {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"},
        [r"vpsignb\s+%ymm", r"vpmaddubsw\s+%ymm", r"vpmaddwd\s+%ymm"],
    ),
    "neon-dotprod": (
        {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]},
        [r"sdot\s+v\d+\.4s"],
    ),
}
"""A CPU of each variant's kind, and what its kernels' assembly must contain (regexes)."""
QTYPES = {
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q6_k": gguf.GGMLQuantizationType.Q6_K,
    "q5_k": gguf.GGMLQuantizationType.Q5_K,
}
SHAPES = [(64, 256), (48, 512), (32, 256)]
"""(n_out, k_in): a 32-row tile, 16-row tiles, one tile; k in whole K-quant super-blocks."""


def int8_reference(x: np.ndarray, codes: np.ndarray, scale: np.ndarray, low: np.ndarray | None) -> np.ndarray:
    """The kernels' arithmetic: per 32 inputs xs = max|x| / 127, xq = round(x * (127 / max|x|))
    to even; per weight group dot = sum(code * xq) exactly; y = sum(xs * (scale * dot + min * sum(xq)))."""
    rows, k_in = x.shape
    n_out, groups = scale.shape
    size = k_in // groups
    grouped = x.reshape(rows, k_in // 32, 32)
    amax = np.abs(grouped).max(axis=2)
    xs = amax / np.float32(127)
    inverse = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    xq = np.rint(grouped * inverse[:, :, None]).astype(np.int64).reshape(rows, groups, size)
    dots = np.einsum("ngk,rgk->rng", codes.astype(np.int64).reshape(n_out, groups, size), xq)
    xs_w = np.repeat(xs, 32 // size, axis=1).astype(np.float64)
    y = (dots * xs_w[:, None, :] * scale.astype(np.float64)[None]).sum(axis=2)
    if low is not None:
        sums = xq.sum(axis=2) * xs_w
        y += (low.astype(np.float64)[None] * sums[:, None, :]).sum(axis=2)
    return y


def run_kernel(target, isa: str, kind: str, x: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """x @ W.T through the int8 kernel for `kind`, W given as row-major arrays w.q_weight etc."""
    from engine.tvm_backend.int8_kernels import int8_tile
    from engine.tvm_backend.int8_kernels_q8 import q8_linear_kernel

    n_out, k_in = arrays["w.q_weight"].shape
    shape = LinearShape(kind, n_out, k_in, int8_tile(n_out), "int8")
    phase = "decode" if x.shape[0] == 1 else "prefill"
    kernel = q8_linear_kernel(shape, phase, isa).with_attr("global_symbol", "linear")
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel}), target=target)
    wanted = [(f"w.{suffix}", spec, dtype) for suffix, (spec, dtype) in shape.weight_shapes().items()]
    weights = repacked_params(arrays, wanted, tied=False)
    out = tvm.runtime.tensor(np.zeros((x.shape[0], n_out), np.float32))
    library["linear"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights), out)
    return out.numpy()


def block_tensor(kind: str, weight: np.ndarray) -> BlockTensor:
    """`weight` in `kind`'s blocks: quantized by the gguf package (Q8_0), or for the K-quants,
    which it cannot quantize, random block bytes (every byte pattern is a valid block) with
    their f16 super-scales set to about the weight's size."""
    if kind == "q8_0":
        return BlockTensor(kind, weight.shape, gguf.quants.quantize(weight, QTYPES[kind]))
    rows, columns = weight.shape
    rng = np.random.default_rng(columns)
    _, size = gguf.GGML_QUANT_SIZES[QTYPES[kind]]
    blocks = rng.integers(0, 256, (rows, columns // 256, size), dtype=np.uint8)
    d_at = {"q6_k": [208], "q5_k": [0, 2]}[kind]
    for start in d_at:
        d = rng.uniform(1e-4, 1e-3, blocks.shape[:2]).astype("<f2")
        blocks[:, :, start : start + 2] = d[..., None].view(np.uint8).reshape(rows, -1, 2)
    return BlockTensor(kind, weight.shape, blocks.reshape(rows, -1))


def stored(tensor: BlockTensor) -> dict[str, np.ndarray]:
    arrays = BlockArrays({"w.weight": tensor})
    return {name: arrays[name] for name in arrays}


def inputs(rng: np.random.Generator, rows: int, k_in: int) -> np.ndarray:
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero group quantizes to zeros, not NaN
    x[-1, 5] = 40.0  # an outlier sets its group's activation scale
    return x


@pytest.mark.parametrize("kind", list(QTYPES))
@pytest.mark.parametrize(("n_out", "k_in"), SHAPES, ids=["tile32", "tile16", "one-tile"])
@pytest.mark.parametrize("rows", [1, 3, 9], ids=["decode", "prefill-3", "prefill-9"])
def test_kernel_matches_the_int8_math_and_numpy_dequantization(host_target, isa, kind, n_out, k_in, rows):
    rng = np.random.default_rng(n_out + k_in + rows)
    tensor = block_tensor(kind, rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32))
    arrays = stored(tensor)
    x = inputs(rng, rows, k_in)

    y = run_kernel(host_target, isa, kind, x, arrays)

    expected = int8_reference(x, arrays["w.q_weight"], arrays["w.q_scale"], arrays.get("w.q_min"))
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # Against the float matmul on gguf's dequantization: only the activations' int8 rounding
    # (half a step, max|x| / 254, per element) separates them.
    exact = x @ gguf.quants.dequantize(tensor.data, QTYPES[kind]).reshape(n_out, k_in).T
    assert np.abs(y - exact).max() < 0.03 * np.abs(exact).max()


def extreme_code8_case(rows: int, n_out: int = 32, k_in: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, codes, scale) where every int16 pair of vpmaddubsw reaches its bound: codes -128 and
    127 against xq of +-127; even rows all -3 (xq = -127: with code -128 each pair is +32512),
    odd rows all +3."""
    codes = np.full((n_out, k_in), -128, np.int8)
    codes[1::2] = 127
    codes[2::4, ::3] = -127
    x = np.where(np.arange(rows) % 2 == 0, -3.0, 3.0).astype(np.float32)[:, None].repeat(k_in, axis=1)
    return x, codes, np.ones((n_out, k_in // 32), np.float16)


@pytest.mark.parametrize("rows", [1, 5], ids=["decode", "prefill"])
def test_extreme_codes_and_activations_never_saturate(host_target, isa, rows):
    """Codes -128 and 127 against xq of +-127 of either sign: vpmaddubsw's int16 pairs reach
    2 * 128 * 127 = 32512, the most the sign trick allows; any saturation would change y."""
    x, codes, scale = extreme_code8_case(rows)
    arrays = {"w.q_weight": codes, "w.q_scale": scale}
    k_in = x.shape[1]

    y = run_kernel(host_target, isa, "q8_0", x, arrays)

    expected = int8_reference(x, codes, scale, None)
    assert np.abs(expected).max() == pytest.approx(k_in * 128 * 3.0, rel=1e-6)  # the extreme case was reached
    np.testing.assert_allclose(y, expected, rtol=1e-6)


@pytest.mark.parametrize("variant", list(BUILD_ONLY))
@pytest.mark.parametrize("kind", list(QTYPES))
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_every_variant_compiles_to_its_instructions(variant, kind, phase):
    """Built (not run) for a CPU of its kind, so the variants this CPU lacks stay buildable."""
    from engine.tvm_backend.int8_kernels import available_isas
    from engine.tvm_backend.int8_kernels_q8 import q8_linear_kernel

    spec, instructions = BUILD_ONLY[variant]
    target = tvm.target.Target(spec)
    assert available_isas(target)[0] == variant
    kernel = q8_linear_kernel(LinearShape(kind, 64, 256, 32, "int8"), phase, variant)
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel.with_attr("global_symbol", "linear")}), target=target)
    assembly = library.inspect_source("asm")
    for instruction in instructions:
        assert re.search(instruction, assembly), instruction


@pytest.mark.parametrize("kind", list(QTYPES))
def test_int8_mode_routes_8bit_codes_to_these_kernels(kind):
    from engine.tvm_backend.linear import cpu_matmul, linear_shape

    with cpu_matmul("int8"):
        shape = linear_shape(kind, 64, 256)
        assert (shape.matmul, shape.weight_shapes()["q_weight"]) == ("int8", ((2, 64, 32, 4), "int8"))
        assert shape.weight_shapes()["q_scale"][0] == (2, 256 // weight_group(kind), 32)
        assert ("q_min" in shape.weight_shapes()) == has_min(kind)
        assert linear_shape(kind, 64, 80).matmul == "float"  # k not in whole activation groups
        assert linear_shape(kind, 24, 256).matmul == "float"  # rows not in tiles of 16
    with cpu_matmul("float"):
        assert linear_shape(kind, 64, 256).matmul == "float"


@pytest.mark.parametrize("kind", ["q6_k", "q5_k"])
def test_k_quant_codes_dequantize_as_the_gguf_package_does(kind):
    from engine.block_codes import dequantize_blocks

    tensor = block_tensor(kind, np.zeros((8, 512), np.float32))
    expected = gguf.quants.dequantize(tensor.data, QTYPES[kind]).reshape(tensor.shape)
    np.testing.assert_array_equal(dequantize_blocks(tensor), expected)
    arrays = stored(tensor)
    assert arrays["w.q_weight"].dtype == np.int8 and arrays["w.q_scale"].dtype == np.float32
    low, high = {"q6_k": (-32, 31), "q5_k": (0, 31)}[kind]
    assert arrays["w.q_weight"].min() == low and arrays["w.q_weight"].max() == high


@pytest.mark.parametrize("kind", ["q6_k", "q5_k"])
@pytest.mark.parametrize("rows", [1, 5], ids=["decode", "prefill"])
def test_float_kernels_of_the_k_quants_match_numpy_dequantization(host_target, kind, rows):
    from engine.tvm_backend.kernels import linear_kernel, output_tile

    n_out, k_in = 48, 512
    rng = np.random.default_rng(rows)
    tensor = block_tensor(kind, np.zeros((n_out, k_in), np.float32))
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    with host_target:
        shape = LinearShape(kind, n_out, k_in, output_tile(n_out))
        kernel = linear_kernel(shape, "decode" if rows == 1 else "prefill").with_attr("global_symbol", "linear")
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel}), target=host_target)
    out = tvm.runtime.tensor(np.zeros((rows, n_out), np.float32))
    wanted = [(f"w.{name}", spec, dtype) for name, (spec, dtype) in shape.weight_shapes().items()]
    weights = repacked_params(BlockArrays({"w.weight": tensor}), wanted, tied=False)
    library["linear"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights), out)
    expected = x @ gguf.quants.dequantize(tensor.data, QTYPES[kind]).reshape(n_out, k_in).T
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("kind", ["q6_k", "q5_k"])
def test_gpu_form_of_the_k_quants_matches_numpy_dequantization(host_target, kind):
    """plain_linear (what dlight schedules on a GPU) compiled here for the CPU: its math."""
    from engine.tvm_backend.linear import GPU_TILE, plain_linear

    n_out, k_in, rows = 24, 256, 3
    tensor = block_tensor(kind, np.zeros((n_out, k_in), np.float32))
    x = np.random.default_rng(5).normal(0, 1, (rows, k_in)).astype(np.float32)
    shape = LinearShape(kind, n_out, k_in, GPU_TILE)
    wanted = [(f"w.{name}", spec, dtype) for name, (spec, dtype) in shape.weight_shapes().items()]
    weights = list(repacked_params(BlockArrays({"w.weight": tensor}), wanted, tied=False))
    row_count = tvm.tirx.Var("rows", "int64")
    x_in = tvm.te.placeholder((row_count, k_in), "float32", name="x")
    w_in = [tvm.te.placeholder(w.shape, str(w.dtype), name=f"w{i}") for i, w in enumerate(weights)]
    library = tvm.compile(tvm.te.create_prim_func([x_in, *w_in, plain_linear(shape, x_in, *w_in)]), target=host_target)
    out = tvm.runtime.tensor(np.zeros((rows, n_out), np.float32))
    library(tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights), out)
    expected = x @ gguf.quants.dequantize(tensor.data, QTYPES[kind]).reshape(n_out, k_in).T
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
