"""The many-row int8 kernels (engine/tvm_backend/int8_rows.py), which a batched decode step and
chunked prefill run: for each 4-bit and 8-bit-code kind and each variant this CPU can run,
against the same int8 arithmetic in numpy and row by row against the one-row decode kernel, at
row counts around the kernel's row block (the last block partly filled), extreme 8-bit codes
without saturation; every variant (those this CPU lacks too) compiled to the instructions it is
named for."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
gguf = pytest.importorskip("gguf")

from engine.block_codes import BlockArrays  # noqa: E402
from engine.block_tensors import BlockTensor  # noqa: E402
from engine.quantization import quantize_q4  # noqa: E402
from test_engine_int8_gguf import block_tensor, dequantized  # noqa: E402
from test_engine_int8_gguf import int8_reference as gguf_reference  # noqa: E402
from test_engine_int8_matmul import BUILD_ONLY  # noqa: E402
from test_engine_int8_matmul import int8_reference as mlc_reference  # noqa: E402
from test_engine_int8_q8 import BUILD_ONLY as Q8_BUILD_ONLY  # noqa: E402
from test_engine_int8_q8 import block_tensor as q8_block_tensor  # noqa: E402
from test_engine_int8_q8 import extreme_code8_case  # noqa: E402
from test_engine_int8_q8 import int8_reference as q8_reference  # noqa: E402
from test_engine_int8_q8 import stored  # noqa: E402

ROWS = [1, 2, 5, 8, 9, 17]
"""Around the row blocks (4 with AVX2, 8 with AVX-512): whole blocks and a partly filled last one."""


def build(target, kernel):
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel.with_attr("global_symbol", "linear")}), target=target)
    return library["linear"]


def run(function, x: np.ndarray, weights, n_out: int) -> np.ndarray:
    out = tvm.runtime.tensor(np.zeros((x.shape[0], n_out), np.float32))
    function(tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights), out)
    return out.numpy()


def layer(kind: str, n_out: int, k_in: int, rng: np.random.Generator):
    """(shape, repacked weights, numpy reference y(x)) for a random layer of `kind`."""
    from engine.tvm_backend.int8_kernels import int8_tile
    from engine.tvm_backend.kernels import LinearShape
    from engine.tvm_backend.repack import repacked_params

    shape = LinearShape(kind, n_out, k_in, int8_tile(n_out), "int8")
    wanted = [(f"w.{suffix}", spec, dtype) for suffix, (spec, dtype) in shape.weight_shapes().items()]
    weight = rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32)
    if kind in ("q8_0", "q6_k", "q5_k"):
        arrays = stored(q8_block_tensor(kind, weight))
        weights = list(repacked_params(arrays, wanted, tied=False))
        return shape, weights, lambda x: q8_reference(x, arrays["w.q_weight"], arrays["w.q_scale"], arrays.get("w.q_min"))
    if kind in ("q4", "q4h"):
        q_weight, q_scale = quantize_q4(weight, "float16" if kind == "q4h" else "float32")
        weights = list(repacked_params({"w.q_weight": q_weight, "w.q_scale": q_scale}, wanted, tied=False))
        return shape, weights, lambda x: mlc_reference(x, q_weight, q_scale)
    weight[:, :32] += 0.04  # an off-centre block: q4_1's min differs from -8 * scale
    tensor = block_tensor(kind, weight)
    weights = list(repacked_params(BlockArrays({"w.weight": tensor}), wanted, tied=False))
    reference = dequantized(tensor)
    return shape, weights, lambda x: gguf_reference(x, reference)


def activations(rows: int, k_in: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero group quantizes to zeros, not NaN
    x[-1, 5] = 40.0  # an outlier sets its group's activation scale
    return x


@pytest.mark.parametrize("kind", ["q4", "q4h", "q4_0", "q4_1", "q8_0", "q6_k", "q5_k"])
@pytest.mark.parametrize(("n_out", "k_in"), [(96, 256), (48, 512)], ids=["tile32", "tile16"])
def test_many_row_kernel_matches_numpy_and_the_one_row_kernel(host_target, isa, kind, n_out, k_in):
    from engine.tvm_backend.int8_kernels import int8_linear_kernel
    from engine.tvm_backend.int8_kernels_q8 import q8_linear_kernel
    from engine.tvm_backend.int8_rows import rows_linear_kernel

    rng = np.random.default_rng(n_out + k_in)
    shape, weights, reference = layer(kind, n_out, k_in, rng)
    many = build(host_target, rows_linear_kernel(shape, isa))
    one_row = q8_linear_kernel if kind in ("q8_0", "q6_k", "q5_k") else int8_linear_kernel
    one = build(host_target, one_row(shape, "decode", isa))
    for rows in ROWS:
        x = activations(rows, k_in, rng)
        y = run(many, x, weights, n_out)
        expected = reference(x)
        np.testing.assert_allclose(y, expected, rtol=0, atol=2e-5 * np.abs(expected).max(), err_msg=f"{rows} rows")
        # Row by row the one-row kernel does the same integer math: only the float sums' order differs.
        singles = np.concatenate([run(one, x[r : r + 1], weights, n_out) for r in range(rows)])
        np.testing.assert_allclose(y, singles, rtol=0, atol=1e-5 * np.abs(singles).max(), err_msg=f"{rows} rows")


def test_many_row_kernel_takes_a_ragged_last_group(host_target, isa):
    """MLC pads a k_in that is not a multiple of 32 with zero codes: the kernel reads zeros past it."""
    from engine.tvm_backend.int8_rows import rows_linear_kernel

    rng = np.random.default_rng(80)
    shape, weights, reference = layer("q4", 64, 80, rng)  # k_in 80: two and a half groups
    x = activations(6, 80, rng)
    y = run(build(host_target, rows_linear_kernel(shape, isa)), x, weights, 64)
    expected = reference(x)
    np.testing.assert_allclose(y, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("rows", [5, 8])
def test_extreme_8bit_codes_never_saturate(host_target, isa, rows):
    """Codes -128 and 127 against xq of +-127 of either sign: the int16 pairs reach their bound."""
    from engine.tvm_backend.int8_rows import rows_linear_kernel
    from engine.tvm_backend.kernels import LinearShape
    from engine.tvm_backend.repack import repacked_params

    x, codes, scale = extreme_code8_case(rows)
    n_out, k_in = codes.shape
    shape = LinearShape("q8_0", n_out, k_in, 32, "int8")
    wanted = [(f"w.{suffix}", spec, dtype) for suffix, (spec, dtype) in shape.weight_shapes().items()]
    weights = list(repacked_params({"w.q_weight": codes, "w.q_scale": scale}, wanted, tied=False))

    y = run(build(host_target, rows_linear_kernel(shape, isa)), x, weights, n_out)

    expected = q8_reference(x, codes, scale, None)
    assert np.abs(expected).max() == pytest.approx(k_in * 128 * 3.0, rel=1e-6)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


@pytest.mark.parametrize("variant", list(BUILD_ONLY))
@pytest.mark.parametrize("kind", ["q4h", "q4_1", "q8_0", "q5_k"])
def test_every_variant_compiles_to_its_instructions(variant, kind):
    """Built (not run) for a CPU of its kind, so the variants this CPU lacks stay buildable."""
    from engine.tvm_backend.int8_rows import rows_linear_kernel
    from engine.tvm_backend.kernels import LinearShape

    spec, instructions = (Q8_BUILD_ONLY if kind in ("q8_0", "q5_k") else BUILD_ONLY)[variant]
    kernel = rows_linear_kernel(LinearShape(kind, 64, 256, 32, "int8"), variant)
    library = tvm.tirx.build(
        tvm.IRModule({"linear": kernel.with_attr("global_symbol", "linear")}), target=tvm.target.Target(spec)
    )
    assembly = library.inspect_source("asm")
    for instruction in instructions:
        # The broadcast activations may come as a memory operand: vpdpbusd (%rax){1to16}, %zmm1, %zmm2.
        assert re.search(instruction.replace(r"\s+%", r"\s+[^\n]*%"), assembly), instruction

