"""The fused one-row (decode) int8 linear layers: one kernel applies what precedes a linear layer,
quantizes the row to int8, runs the integer dot products of int8_kernels.py (4-bit codes) or
int8_kernels_q8.py (8-bit codes), in their layout and instruction-set variant, and adds the
residual after. A decode step then runs four kernels per decoder layer (qkv, o_proj, gate_up,
down_proj) besides attention, where the unfused graph also ran a norm, a SwiGLU and two adds,
each with its own buffer and VM call.

What this module owns: DecodeFusion (what a kernel fuses), the prologue TIR (RMSNorm with its
weight before qkv and gate_up; silu(gate) * up before down_proj), the kernels' builder, and the
relax call that takes a Linear layer's weights. The kernel modules call write_prologue and
build the dot products; the model (engine/models/llama.py) decides where fusion applies
(fusable) and wires the decode graph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from tvm import tirx
from tvm.relax.frontend.nn import Tensor, op
from tvm.script import tirx as T

from engine.tvm_backend.kernels import CODE8_KINDS, KERNEL_ATTR, Q4_GROUP, LinearShape

if TYPE_CHECKING:
    from engine.tvm_backend.int8_kernels import Int8Isa

Prologue = Literal["none", "rms_norm", "swiglu"]
_LANES = 16
_ENABLED: ContextVar[bool] = ContextVar("tandem_decode_fusion", default=False)


@contextmanager
def decode_fusion(enabled: bool) -> Iterator[None]:
    """Models built in this scope run their decode step fused where their layers allow it (the
    compiler enters it with the target's choice, target.DECODE_FUSION_ENV)."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def decode_fusion_enabled() -> bool:
    return _ENABLED.get()


@dataclass(frozen=True)
class DecodeFusion:
    """What one fused decode kernel does around its linear layer."""

    prologue: Prologue = "none"
    """rms_norm: x * rsqrt(mean(x^2) + eps) * norm (the pre-norm of qkv and gate_up); swiglu:
    the input is [gate | up], 2 * k_in wide, and the row is silu(gate) * up (down_proj)."""
    residual: bool = False
    """y = residual + x @ W.T (o_proj and down_proj end a residual branch)."""
    eps: float = 1e-5
    input_dtype: str = "float32"
    """float16: x comes in halves (o_proj after a float16 KV cache), widened as it is quantized;
    with no prologue only."""
    output_dtype: str = "float32"
    """float16: y is stored in halves (qkv before a float16 KV cache): the cache takes them so,
    and a cast of its own would be one more kernel and buffer a layer."""

    def __post_init__(self) -> None:
        if self.input_dtype != "float32" and self.prologue != "none":
            raise ValueError(f"A {self.prologue} prologue reads a float32 input, not {self.input_dtype}.")

    def input_width(self, k_in: int) -> int:
        return 2 * k_in if self.prologue == "swiglu" else k_in

    @property
    def dtype_suffix(self) -> str:
        """What a kernel's name adds for halves in or out: "", "_from_float16", "_to_float16"."""
        suffix = f"_from_{self.input_dtype}" if self.input_dtype != "float32" else ""
        return suffix + (f"_to_{self.output_dtype}" if self.output_dtype != "float32" else "")


def fusable(shape: LinearShape) -> bool:
    """Whether a layer's decode can run fused: an int8 layout (so a CPU target) over whole
    activation groups (the prologue writes whole groups; MLC's ragged last group stays unfused)."""
    return shape.matmul == "int8" and shape.k_in % Q4_GROUP == 0


def write_prologue(fusion: DecodeFusion, k_in: int):
    """A macro (x, norm, xf, m) writing the linear layer's float input row xf[m, :k_in] from row m
    of the kernel's inputs; None when the kernel reads x as it is."""
    vectors = k_in // _LANES
    eps = fusion.eps
    if fusion.prologue == "rms_norm":

        @T.macro
        def rms_norm(x, norm, xf, m):
            # relax's rms_norm step for step (squares stored, then one serial sum, then
            # (rsqrt * x) * weight), so the row is bit-identical to the unfused graph's: a sum in
            # another order moves it by an ulp, and the int8 rounding after turned an ulp into
            # logit changes of up to 0.8 on SmolLM2.
            squares = T.alloc_buffer((k_in,), "float32")
            total = T.alloc_buffer((1,), "float32", scope="local")
            for i in range(k_in):
                squares[i] = x[m, i] * x[m, i]
            total[0] = T.float32(0)
            for i in range(k_in):
                total[0] = total[0] + squares[i]
            total[0] = T.rsqrt(total[0] / T.float32(k_in) + T.float32(eps))
            for c in range(vectors):
                for lane in T.vectorized(_LANES):
                    xf[m, c * _LANES + lane] = total[0] * x[m, c * _LANES + lane] * norm[c * _LANES + lane]

        return rms_norm
    if fusion.prologue == "swiglu":

        from engine.tvm_backend.pipeline import silu_value  # the unfused graph's SiLU

        @T.macro
        def swiglu(x, norm, xf, m):
            for c in range(vectors):
                for lane in T.vectorized(_LANES):
                    xf[m, c * _LANES + lane] = silu_value(x[m, c * _LANES + lane]) * x[m, k_in + c * _LANES + lane]

        return swiglu
    return None


def keep_params(func: tirx.PrimFunc, keep: Sequence[bool]) -> tirx.PrimFunc:
    """`func` with only the parameters `keep` marks: the kernels are written once with every
    input a fusion may take, and each variant drops those its body never reads."""
    params = [param for param, kept in zip(func.params, keep, strict=True) if kept]
    return tirx.PrimFunc(params, func.body, attrs=func.attrs)


def fused_decode_kernel(shape: LinearShape, fusion: DecodeFusion, isa: Int8Isa | None = None) -> tirx.PrimFunc:
    """The one-row kernel of `shape` (an int8 layout) with `fusion` around it, for `isa` (default:
    the scope's). Its parameters: x, norm (rms_norm only), the layer's weights, residual (when
    fused), y."""
    from engine.tvm_backend.int8_kernels import isa_in_scope

    if not fusable(shape):
        raise ValueError(f"{shape} has no fused decode kernel (it needs an int8 layout over whole groups of 32).")
    return _fused_decode_kernel(shape, fusion, isa_in_scope(isa))


@lru_cache(maxsize=None)
def _fused_decode_kernel(shape: LinearShape, fusion: DecodeFusion, isa: Int8Isa) -> tirx.PrimFunc:
    from engine.tvm_backend import int8_kernels, int8_kernels_q8

    spec = int8_kernels.ISAS[isa]
    build = int8_kernels_q8._kernel if shape.kind in CODE8_KINDS else int8_kernels._kernel
    func = build(shape, 1, 1, spec, fusion)
    # Opaque and scheduled like the unfused kernels, and built in their LLVM module.
    return func.with_attrs({"tirx.is_scheduled": True, "op_pattern": 8, KERNEL_ATTR: "linear_int8"})


def fused_linear(
    shape: LinearShape,
    weights: Sequence[Tensor],
    fusion: DecodeFusion,
    x: Tensor,
    norm: Tensor | None = None,
    residual: Tensor | None = None,
) -> Tensor:
    """[rows, n_out]: `fusion` around the linear layer on x ([rows, k_in], or [rows, 2 * k_in]
    for swiglu). One row takes the fused decode kernel; a symbolic number of rows (a batched
    decode step) the many-row kernel with the same fusion (int8_rows.py)."""
    from engine.tvm_backend.int8_rows import rows_linear_kernel

    if (norm is not None) != (fusion.prologue == "rms_norm") or (residual is not None) != fusion.residual:
        raise ValueError(f"{fusion} takes {'a' if fusion.prologue == 'rms_norm' else 'no'} norm weight "
                         f"and {'a' if fusion.residual else 'no'} residual.")
    if not fusable(shape):
        raise ValueError(f"{shape} has no fused kernel (it needs an int8 layout over whole groups of 32).")
    rows = x.shape[0]
    one_row = isinstance(rows, int) and rows == 1
    phase = "decode" if one_row else "rows"
    name = (f"{shape.kind}_{phase}_{fusion.prologue}{'_residual' if fusion.residual else ''}_{shape.n_out}x{shape.k_in}"
            f"{fusion.dtype_suffix}")
    kernel = fused_decode_kernel(shape, fusion) if one_row else rows_linear_kernel(shape, fusion=fusion)
    args = [x, *([norm] if norm is not None else []), *weights, *([residual] if residual is not None else [])]
    return op.tensor_ir_op(kernel, name, args=args, out=Tensor.placeholder((rows, shape.n_out), fusion.output_dtype))
