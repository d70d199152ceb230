"""Which function computes a linear layer for the target being compiled: the hand-scheduled CPU
kernels (float: engine.tvm_backend.kernels; int8 activations: int8_kernels), or on a GPU the
plain dequantize + matmul TIR that TVM's dlight GPU rules schedule (the CPU kernels' loops and
layout mean nothing to a GPU)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

from tvm import te
from tvm.relax.frontend.nn import Tensor, op
from tvm.target import Target

from engine.tvm_backend.int8_kernels import int8_linear_kernel, int8_tile
from engine.tvm_backend.int8_kernels_q8 import q8_int8_supported, q8_linear_kernel
from engine.tvm_backend.int8_rows import rows_linear_kernel
from engine.tvm_backend.kernels import (
    CODE8_KINDS,
    Q4_GROUP,
    Q4_PER_WORD,
    CpuMatmul,
    has_min,
    LinearShape,
    WeightKind,
    linear_kernel,
    output_tile,
    q4_code,
    q4_value,
    weight_group,
)

INT8_KINDS: tuple[WeightKind, ...] = ("q4", "q4h", "q4_0", "q4_1", "q4_k")
"""The kinds the 4-bit int8 kernels take (int8_kernels.py): every 4-bit kind (code * scale + min
per group of 32). The 8-bit-code kinds (kernels.CODE8_KINDS: q8_0, q6_k, q5_k) take
int8_kernels_q8.py's."""

GPU_TILE = 1
"""On a GPU the weights keep MLC's row-major layout: a tile of one output row is exactly it."""
_CPU_MATMUL: ContextVar[CpuMatmul] = ContextVar("tandem_cpu_matmul", default="float")


@contextmanager
def cpu_matmul(mode: CpuMatmul) -> Iterator[None]:
    """Linear layers built in this scope compute their CPU matmuls this way where they can (the
    compiler enters it with the target's mode, which says int8 only on a VNNI CPU)."""
    token = _CPU_MATMUL.set(mode)
    try:
        yield
    finally:
        _CPU_MATMUL.reset(token)


def compiling_for_gpu() -> bool:
    """Whether the target in scope (the compiler enters it while exporting) is a GPU."""
    target = Target.current(allow_none=True)
    return target is not None and "gpu" in target.keys


def linear_shape(kind: WeightKind, n_out: int, k_in: int) -> LinearShape:
    """The weight layout of a linear layer for the target and matmul mode in scope: int8 applies
    to 4-bit weights (INT8_KINDS) whose output rows come in multiples of 16; other layers stay
    float."""
    if compiling_for_gpu():
        return LinearShape(kind, n_out, k_in, GPU_TILE)
    int8_rows = int8_tile(n_out)
    if _CPU_MATMUL.get() == "int8" and kind in INT8_KINDS and int8_rows is not None:
        return LinearShape(kind, n_out, k_in, int8_rows, "int8")
    if (_CPU_MATMUL.get() == "int8" and kind in CODE8_KINDS and int8_rows is not None
            and q8_int8_supported(kind, n_out, k_in, int8_rows)):
        return LinearShape(kind, n_out, k_in, int8_rows, "int8")
    return LinearShape(kind, n_out, k_in, output_tile(n_out))


def linear(shape: LinearShape, x: Tensor, weights: Sequence[Tensor]) -> Tensor:
    """y[rows, n_out] = x[rows, k_in] @ W.T for the target in scope, W in the layout of `shape`."""
    rows = x.shape[0]
    phase: Literal["decode", "prefill"] = "decode" if isinstance(rows, int) and rows == 1 else "prefill"
    name = f"{shape.kind}_{phase}_{shape.n_out}x{shape.k_in}"
    if compiling_for_gpu():
        return op.tensor_expr_op(lambda *args: plain_linear(shape, *args), name, args=[x, *weights])
    if shape.matmul == "int8" and phase == "prefill":
        # Many rows (a batched decode step, a prompt chunk): the kernels that unpack each weight
        # register once for a block of rows (int8_rows.py).
        kernel = rows_linear_kernel(shape)
    elif shape.matmul == "int8":
        kernel = q8_linear_kernel(shape, phase) if shape.kind in CODE8_KINDS else int8_linear_kernel(shape, phase)
    else:
        kernel = linear_kernel(shape, phase)
    return op.tensor_ir_op(
        kernel, name, args=[x, *weights], out=Tensor.placeholder((rows, shape.n_out), "float32")
    )


def plain_linear(shape: LinearShape, x: te.Tensor, *weights: te.Tensor) -> te.Tensor:
    """The unscheduled form: the weight dequantized (or read) as [n_out, k_in], then the matmul;
    the shape dlight's GEMV (decode) and Matmul (prefill) rules recognise."""
    k_in, n_out, tile = shape.k_in, shape.n_out, shape.tile
    if shape.kind == "q0":
        (dense,) = weights
        weight = te.compute((n_out, k_in), lambda n, k: dense[n // tile, k, n % tile], name="weight")
    elif shape.kind in CODE8_KINDS:
        q, s, *low = weights
        size = weight_group(shape.kind)

        def code_value(n, k):
            value = q[n // tile, k, n % tile].astype("float32") * s[n // tile, k // size, n % tile].astype("float32")
            return value + low[0][n // tile, k // size, n % tile].astype("float32") if low else value

        weight = te.compute((n_out, k_in), code_value, name="dequantize")
    elif has_min(shape.kind):
        q, s, low = weights
        weight = te.compute(
            (n_out, k_in),
            lambda n, k: q4_code(q[n // tile, k // Q4_PER_WORD, n % tile], k)
            * s[n // tile, k // Q4_GROUP, n % tile].astype("float32")
            + low[n // tile, k // Q4_GROUP, n % tile].astype("float32"),
            name="dequantize",
        )
    else:
        q, s = weights
        weight = te.compute(
            (n_out, k_in),
            lambda n, k: q4_value(q[n // tile, k // Q4_PER_WORD, n % tile], k)
            * s[n // tile, k // Q4_GROUP, n % tile].astype("float32"),
            name="dequantize",
        )
    k = te.reduce_axis((0, k_in), name="k")
    return te.compute((x.shape[0], n_out), lambda m, n: te.sum(x[m, k] * weight[n, k], axis=k), name="matmul")
