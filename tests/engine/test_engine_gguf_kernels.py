"""llama.cpp's block formats run as they are: each GGUF weight kind's CPU kernel (decode and
prefill rows), its GPU form (compiled here for the CPU: its math does not depend on the
schedule) and the block-code conversion, against the `gguf` package's numpy dequantization of
the same bytes."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
gguf = pytest.importorskip("gguf")

from engine.block_codes import BlockArrays, block_arrays, dequantize_blocks  # noqa: E402
from engine.block_tensors import BlockTensor  # noqa: E402
from engine.errors import ModelFileError  # noqa: E402
from engine.tvm_backend.kernels import LinearShape, linear_kernel, output_tile  # noqa: E402
from engine.tvm_backend.linear import GPU_TILE, linear_shape, plain_linear  # noqa: E402
from engine.tvm_backend.repack import repacked_params  # noqa: E402

QTYPES = {
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
    "q4_1": gguf.GGMLQuantizationType.Q4_1,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}


def block_tensor(kind: str, weight: np.ndarray) -> BlockTensor:
    return BlockTensor(kind, weight.shape, gguf.quants.quantize(weight, QTYPES[kind]))


def reference(tensor: BlockTensor) -> np.ndarray:
    return gguf.quants.dequantize(tensor.data, QTYPES[tensor.format]).reshape(tensor.shape)


def repacked(tensor: BlockTensor, shape: LinearShape) -> list[np.ndarray]:
    arrays = BlockArrays({"w.weight": tensor})
    wanted = [(f"w.{name}", spec, dtype) for name, (spec, dtype) in shape.weight_shapes().items()]
    return list(repacked_params(arrays, wanted, tied=False))


@pytest.fixture(scope="module")
def cpu():
    return tvm.target.Target.from_device(tvm.cpu())


@pytest.mark.parametrize("kind", list(QTYPES))
def test_block_codes_dequantize_as_the_gguf_package_does(kind):
    rng = np.random.default_rng(3)
    weight = rng.normal(0, 0.1, (8, 96)).astype(np.float32)
    weight[1, 32:64] = 0.0  # an all-zero block
    tensor = block_tensor(kind, weight)
    np.testing.assert_allclose(dequantize_blocks(tensor), reference(tensor), rtol=0, atol=1e-7)
    arrays = block_arrays(tensor, "w")
    assert arrays["w.q_scale"].dtype == np.float16 and arrays["w.q_scale"].shape == (8, 3)


@pytest.mark.parametrize("kind", list(QTYPES))
@pytest.mark.parametrize(("n_out", "k_in"), [(32, 64), (48, 96), (16, 128)])
@pytest.mark.parametrize("rows", [1, 3, 9], ids=["decode", "prefill-3", "prefill-9"])
def test_cpu_kernel_matches_numpy_dequantization(cpu, kind, n_out, k_in, rows):
    rng = np.random.default_rng(n_out * k_in + rows)
    tensor = block_tensor(kind, rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32))
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    with cpu:
        shape = LinearShape(kind, n_out, k_in, output_tile(n_out))
        kernel = linear_kernel(shape, "decode" if rows == 1 else "prefill").with_attr("global_symbol", "linear")
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel}), target=cpu)
    out = tvm.runtime.tensor(np.zeros((rows, n_out), np.float32))
    library["linear"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in repacked(tensor, shape)), out)
    expected = x @ reference(tensor).T
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("kind", list(QTYPES))
def test_gpu_form_matches_numpy_dequantization(cpu, kind):
    n_out, k_in, rows = 24, 96, 5
    rng = np.random.default_rng(11)
    tensor = block_tensor(kind, rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32))
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    shape = LinearShape(kind, n_out, k_in, GPU_TILE)
    weights = repacked(tensor, shape)
    row_count = tvm.tirx.Var("rows", "int64")
    x_in = tvm.te.placeholder((row_count, k_in), "float32", name="x")
    w_in = [tvm.te.placeholder(w.shape, str(w.dtype), name=f"w{i}") for i, w in enumerate(weights)]
    function = tvm.te.create_prim_func([x_in, *w_in, plain_linear(shape, x_in, *w_in)])
    library = tvm.compile(function, target=cpu)
    out = tvm.runtime.tensor(np.zeros((rows, n_out), np.float32))
    library(tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights), out)
    np.testing.assert_allclose(out.numpy(), x @ reference(tensor).T, rtol=1e-5, atol=1e-5)


def test_q8_0_stays_on_the_float_kernels_under_int8():
    from engine.tvm_backend.linear import cpu_matmul

    with cpu_matmul("int8"):
        assert linear_shape("q8_0", 64, 64).matmul == "float"
        assert linear_shape("q4", 64, 64).matmul == "int8"


def test_a_block_tensor_of_the_wrong_size_is_named():
    tensor = BlockTensor("q4_1", (4, 64), np.zeros(4 * 2 * 20 - 1, np.uint8))
    with pytest.raises(ModelFileError, match="'w'.*damaged or truncated"):
        block_arrays(tensor, "w")
