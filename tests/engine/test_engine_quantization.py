"""q4 group quantization against a small loop-by-loop reference of MLC's layout."""

from __future__ import annotations

import numpy as np
import pytest

from engine.quantization import QUANTIZATIONS, TensorKind, dequantize_q4, quantize_q4, unpack_nibbles


def reference_quantize(weight: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """MLC's q4 layout written element by element: groups of 32 along K, scale = max|w| / 7,
    q = clamp(round(w / scale + 7), 0, 14), eight codes per uint32, low nibble first."""
    t = np.dtype(dtype).type
    rows, cols = weight.shape
    groups = cols // 32
    q_weight = np.zeros((rows, cols // 8), dtype=np.uint32)
    q_scale = np.zeros((rows, groups), dtype=dtype)
    for n in range(rows):
        for g in range(groups):
            group = [t(weight[n, g * 32 + i]) for i in range(32)]
            scale = t(max(abs(v) for v in group) / t(7))
            q_scale[n, g] = scale
            for i, value in enumerate(group):
                code = int(min(max(np.round(t(t(value / scale) + t(7))), 0), 14))
                k = g * 32 + i
                q_weight[n, k // 8] |= np.uint32(code << (4 * (k % 8)))
    return q_weight, q_scale


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_q4_packing_is_bit_exact_with_the_reference(dtype):
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.05, size=(6, 96)).astype(np.float32)
    weight[2, 40] = 0.5  # an outlier sets its group's scale
    q_weight, q_scale = quantize_q4(weight, dtype)
    ref_weight, ref_scale = reference_quantize(weight, dtype)
    assert q_weight.dtype == np.uint32 and q_weight.shape == (6, 12)
    assert q_scale.dtype == np.dtype(dtype) and q_scale.shape == (6, 3)
    np.testing.assert_array_equal(q_weight, ref_weight)
    np.testing.assert_array_equal(q_scale.view(np.uint8), ref_scale.view(np.uint8))


def test_low_nibble_holds_the_first_element():
    weight = np.zeros((1, 32), dtype=np.float32)
    weight[0, 0] = -7.0  # code 0
    weight[0, 1] = 7.0  # code 14
    q_weight, q_scale = quantize_q4(weight, "float32")
    assert q_scale[0, 0] == 1.0
    assert q_weight[0, 0] == 0x777777E0  # codes 0, 14, then six 7s (zeros)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_dequantize_error_is_within_half_a_step(dtype):
    rng = np.random.default_rng(1)
    weight = rng.normal(0, 1, size=(16, 128)).astype(np.float32)
    q_weight, q_scale = quantize_q4(weight, dtype)
    restored = dequantize_q4(q_weight, q_scale)
    assert restored.dtype == np.dtype(dtype)
    step = np.repeat(q_scale.astype(np.float32), 32, axis=1)
    error = np.abs(restored.astype(np.float32) - weight)
    assert np.all(error <= step / 2 + 1e-3 * np.abs(weight) + 1e-3 * step)


def test_q4f16_dequantize_rounds_the_product_to_float16():
    rng = np.random.default_rng(2)
    q_weight, q_scale = quantize_q4(rng.normal(size=(4, 64)).astype(np.float32), "float16")
    restored = dequantize_q4(q_weight, q_scale)
    assert restored.dtype == np.float16


def test_all_zero_group_dequantizes_to_zero():
    q_weight, q_scale = quantize_q4(np.zeros((2, 64), dtype=np.float32), "float16")
    assert np.all(dequantize_q4(q_weight, q_scale) == 0)


def test_k_not_a_multiple_of_32_pads_with_zero_codes():
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(3, 40)).astype(np.float32)
    q_weight, q_scale = quantize_q4(weight, "float32")
    assert q_weight.shape == (3, 8) and q_scale.shape == (3, 2)
    assert np.abs(dequantize_q4(q_weight, q_scale, columns=40) - weight).max() < q_scale.max()


def test_registry_stores_each_kind_as_mlc_does():
    q4 = QUANTIZATIONS["q4f16_1"]
    assert set(q4.stored_specs(TensorKind.LINEAR, (64, 128))) == {".q_weight", ".q_scale"}
    assert set(q4.stored_specs(TensorKind.EMBEDDING, (300, 64))) == {".q_weight", ".q_scale"}
    assert q4.stored_specs(TensorKind.NORM, (64,))[".weight"].dtype == "float16"
    assert q4.stored_specs(TensorKind.BIAS, (64,))[".bias"].dtype == "float16"
    q0 = QUANTIZATIONS["q0f32"]
    stored = q0.store(TensorKind.LINEAR, np.ones((2, 32), dtype=np.float64))
    assert list(stored) == [".weight"] and stored[".weight"].dtype == np.float32


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_q4_codes_match_the_formula_compiled_by_tvm(dtype):
    """The same formula as a TVM tensor expression compiled for this CPU (MLC quantizes with
    TVM): fp16 steps and tie rounding agree bit for bit, ties included."""
    tvm = pytest.importorskip("tvm")
    from tvm import te, tirx

    rng = np.random.default_rng(4)
    rows, cols = 64, 128
    weight = rng.normal(0, 0.05, size=(rows, cols)).astype(dtype)
    weight[:, 0] = 0.7  # every group 0 gets scale 0.1, and multiples of 0.05 land on ties
    weight[:, 1:32] = np.round(weight[:, 1:32] / 0.05) * 0.05

    w = te.placeholder((rows, cols), dtype, name="w")
    r = te.reduce_axis((0, 32), name="r")
    max_abs = te.compute((rows, cols // 32), lambda n, g: te.max(te.abs(w[n, g * 32 + r]), axis=r))
    scale = te.compute((rows, cols // 32), lambda n, g: max_abs[n, g] / tirx.const(7, dtype))
    codes = te.compute(
        (rows, cols),
        lambda n, k: tirx.min(
            tirx.max(tirx.round(w[n, k] / scale[n, k // 32] + tirx.const(7, dtype)), tirx.const(0, dtype)),
            tirx.const(14, dtype),
        ).astype("uint32"),
    )
    compiled = tvm.compile(te.create_prim_func([w, scale, codes]), target=tvm.target.Target.from_device(tvm.cpu()))
    out_scale = tvm.runtime.tensor(np.zeros((rows, cols // 32), dtype))
    out_codes = tvm.runtime.tensor(np.zeros((rows, cols), "uint32"))
    compiled(tvm.runtime.tensor(weight), out_scale, out_codes)

    q_weight, q_scale = quantize_q4(weight, dtype)
    np.testing.assert_array_equal(q_scale.view(np.uint8), out_scale.numpy().view(np.uint8))
    np.testing.assert_array_equal(unpack_nibbles(q_weight), out_codes.numpy())
