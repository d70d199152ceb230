"""The int8-activation kernels for weights stored as signed 8-bit codes with a per-group f32/f16
scale and an optional per-group min (GGUF's Q8_0, and Q6_K / Q5_K unpacked to bytes), in the
same variants as int8_kernels.py (Int8Isa, chosen by int8_isa).

Activations are quantized as in int8_kernels.py: per group of 32, xs = max|x| / 127 and
xq = round(x / xs), so |xq| <= 127. A weight group (16 or 32 codes, kernels.weight_group) gives
dot = sum(code * xq) in int32, and y[n] = sum over groups of scale[n, g] * xs * dot + min[n, g] *
xs * sum(xq over the group). The min's term takes the quantized sum, as llama.cpp does, not the
exact float one: then y = sum((scale * code + min) * xq * xs), each weight meeting the same
rounded activation, and the error scales with the weights, not with their offset codes (with
the float sum, codes 0..31 around a min of about -16 * scale gave 2.5x the logit error).

The codes are signed, and each instruction set takes them its own way:
- AVX2 `vpmaddubsw` multiplies u8 by s8 into saturating int16 pairs, so it is fed |code| (as u8,
  128 for -128) and xq with the code's sign applied (`vpsignb`, as llama.cpp's q8_0 dot does):
  each pair is at most 2 * 128 * 127 = 32512 < 2^15, never saturated; `vpmaddwd` by ones widens
  every pair sum to int32 at once (two pair sums could overflow int16).
- VNNI `vpdpbusd` (u8 x s8, int32 sums of four): code ^ 0x80 = code + 128 as u8, and the
  group's dot starts at -128 * sum(xq).
- ARM `sdot` is signed x signed: the codes as they are.

Weight layout (LinearShape.weight_shapes gives it as [n_tiles, k_in / 4, tile, 4] int8; repack.py
fills it): per tile of `tile` output rows (16 or 32), chunks of 4 * tile bytes, chunk c holding the
codes of k = 4c..4c+3 of every row, row r at bytes 4r..4r+3. A register of L int32 lanes covers L
consecutive rows: one load is the u8/s8 operand of one dot product instruction against the
broadcast xq word of those four k. The layout does not depend on the group size or the variant.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from tvm import tirx
from tvm.script import tirx as T

from engine.tvm_backend.int8_decode import DecodeFusion, keep_params, write_prologue
from engine.tvm_backend.int8_kernels import (
    CACHE_LINE,
    PREFETCH_AHEAD_BYTES,
    Int8Isa,
    IsaSpec,
    isa_in_scope,
    phase_kernel,
)
from engine.tvm_backend.kernels import Q4_GROUP, LinearShape, as_float32, has_min, scale_dtype, stored_as, weight_group

ACTIVATION_GROUP = Q4_GROUP
"""Activations are quantized per 32 inputs, whatever the weights' group (16 or 32)."""
CODE_BIAS = 128
"""VNNI reads a code c as the u8 c + 128 (c ^ 0x80) and subtracts 128 * sum(xq) from the dot."""
_PMADDWD = "llvm.x86.avx2.pmadd.wd"
_PSIGNB = "llvm.x86.avx2.psign.b"


def q8_int8_supported(kind: str, n_out: int, k_in: int, tile: int | None) -> bool:
    """Whether a layer fits these kernels: whole activation groups along k and whole tiles of 16."""
    return tile is not None and k_in % ACTIVATION_GROUP == 0 and k_in % weight_group(kind) == 0


def q8_linear_kernel(
    shape: LinearShape, phase: Literal["decode", "prefill"], isa: Int8Isa | None = None
) -> tirx.PrimFunc:
    """y[rows, n_out] = x[rows, k_in] @ W.T with int8 activations, W as 8-bit codes in the layout
    above, for `isa` (default: the scope's, see int8_kernels.int8_isa_scope).

    decode: one row; prefill: a symbolic number of rows, in blocks of prefill_rows(tile)."""
    chosen = isa_in_scope(isa)
    if not q8_int8_supported(shape.kind, shape.n_out, shape.k_in, shape.tile):
        raise ValueError(f"{shape} does not fit the 8-bit int8 kernels (k_in must be a multiple of 32).")
    return _q8_linear_kernel(shape, phase, chosen)


@lru_cache(maxsize=None)
def _q8_linear_kernel(shape: LinearShape, phase: Literal["decode", "prefill"], isa: Int8Isa) -> tirx.PrimFunc:
    return phase_kernel(_kernel, shape, phase, isa)


def _dot_start(spec: IsaSpec, code_sum: tirx.PrimExpr) -> tirx.PrimExpr:
    """A group's int32 accumulator before its first code: -128 * sum(xq) for VNNI, else zero."""
    if spec.dot == "dpbusd":
        return T.broadcast(code_sum * -CODE_BIAS, spec.lanes)
    return tirx.Broadcast(tirx.const(0, "int32"), spec.lanes)


def _dot_step(spec: IsaSpec, acc: tirx.PrimExpr, codes: tirx.PrimExpr, activations: tirx.PrimExpr) -> tirx.PrimExpr:
    """acc plus, per 32-bit lane, the dot product of its four signed codes and four xq."""
    lanes = spec.lanes
    width = f"int8x{4 * lanes}"
    if spec.dot == "maddubs":
        magnitude = T.call_llvm_pure_intrin(width, _PSIGNB, codes, codes)  # |c|; -128 stays 0x80 = 128 as u8
        signed = T.call_llvm_pure_intrin(width, _PSIGNB, activations, codes)  # xq * sign(c)
        pairs = T.call_llvm_pure_intrin(f"int16x{2 * lanes}", spec.intrinsic, magnitude, signed)
        ones = tirx.Broadcast(tirx.const(1, "int16"), 2 * lanes)
        return acc + T.call_llvm_pure_intrin(f"int32x{lanes}", _PMADDWD, pairs, ones)
    if spec.dot == "dpbusd":
        biased = codes ^ tirx.Broadcast(tirx.const(-CODE_BIAS, "int8"), 4 * lanes)
        return T.call_llvm_pure_intrin(f"int32x{lanes}", spec.intrinsic, acc, biased, activations)
    return T.call_llvm_pure_intrin(f"int32x{lanes}", spec.intrinsic, acc, codes, activations)


def _quad(xq: tirx.Buffer, row, word, lanes: int) -> tirx.PrimExpr:
    """Four int8 activations (one int32 word of xq) repeated in every 32-bit lane."""
    return T.reinterpret(f"int8x{4 * lanes}", T.broadcast(xq[row, word], lanes))


def _lanes(buffer: tirx.Buffer, *index, lanes: int) -> tirx.PrimExpr:
    *outer, start = index
    return tirx.BufferLoad(buffer, [*outer, tirx.Ramp(start, 1, lanes)])


def _prefetch(flat: tirx.Buffer, offset) -> tirx.PrimExpr:
    """Hint the cache line of flat[offset] (clamped to the buffer) into all cache levels."""
    last = flat.shape[0] - 1
    address = tirx.address_of(tirx.BufferLoad(flat, [tirx.min(offset, last)]))
    return T.call_llvm_intrin("void", "llvm.prefetch.p0", address, 0, 3, 1)


def _kernel(shape: LinearShape, rows, row_block: int, spec: IsaSpec, fusion: DecodeFusion | None = None) -> tirx.PrimFunc:
    """The kernel of `shape`; with `fusion` (one row only, see int8_decode) its prologue before
    the quantization and its residual after the dot products."""
    k_in, n_out, tile, kind = shape.k_in, shape.n_out, shape.tile, shape.kind
    fusion = fusion or DecodeFusion()
    prologue = write_prologue(fusion, k_in)
    add_residual = fusion.residual
    x_width = fusion.input_width(k_in)
    group = weight_group(kind)
    halves = ACTIVATION_GROUP // 16  # 16-wide float vectors per activation group
    per_activation = ACTIVATION_GROUP // group  # weight groups per activation group (1 or 2)
    a_groups, w_groups = k_in // ACTIVATION_GROUP, k_in // group
    chunks = group // 4  # 4-k chunks per weight group
    lanes = spec.lanes
    sub = tile // lanes  # registers per tile row
    chunk_bytes = 4 * tile
    group_bytes = chunks * chunk_bytes
    n_tiles = n_out // tile
    blocks = (rows + row_block - 1) // row_block
    rows_padded = blocks * row_block
    specs = shape.weight_shapes()
    weight_shape = specs["q_weight"][0]
    scales = scale_dtype(kind)
    with_min = has_min(kind)
    scales_per_line = CACHE_LINE // (2 if scales == "float16" else 4)
    ahead = max(1, PREFETCH_AHEAD_BYTES // group_bytes)
    prefetching = isinstance(rows, int)  # decode streams the weights; prefill reuses each tile
    quantize_loop = T.serial if isinstance(rows, int) else T.parallel
    min_shape = specs["q_min"][0] if with_min else (1, 1, tile)

    @T.macro
    def quantize(source, xq8, xs, code_sum, x_sum):
        for m in quantize_loop(rows):
            scale = T.alloc_buffer((2,), "float32", scope="local")  # max |x|, then 127 / max |x|
            for a in range(a_groups):
                scale[0] = T.float32(0)
                for h in range(halves):
                    scale[0] = T.max(
                        scale[0],
                        T.call_llvm_pure_intrin(
                            "float32", "llvm.vector.reduce.fmax", T.fabs(as_float32(_lanes(source, m, a * ACTIVATION_GROUP + h * 16, lanes=16)))
                        ),
                    )
                xs[m, a] = scale[0] / T.float32(127)
                scale[1] = T.if_then_else(scale[0] > T.float32(0), T.float32(127) / scale[0], T.float32(0))
                for h in range(halves):
                    xq8[m, T.ramp(a * ACTIVATION_GROUP + h * 16, 1, 16)] = T.Cast(
                        "int8x16", T.nearbyint(as_float32(_lanes(source, m, a * ACTIVATION_GROUP + h * 16, lanes=16)) * scale[1])
                    )
                for p in range(per_activation):
                    code_sum[m, a * per_activation + p] = T.int32(0)
                    for h in range(halves // per_activation):
                        code_sum[m, a * per_activation + p] = code_sum[m, a * per_activation + p] + T.call_llvm_pure_intrin(
                            "int32",
                            "llvm.vector.reduce.add",
                            T.Cast("int32x16", _lanes(xq8, m, a * ACTIVATION_GROUP + (p * halves // per_activation + h) * 16, lanes=16)),
                        )
                    x_sum[m, a * per_activation + p] = T.Cast("float32", code_sum[m, a * per_activation + p]) * xs[m, a]

    @T.macro
    def body(x, norm, w, s, low, residual, y):
        w_flat = T.decl_buffer((n_tiles * w_groups * group_bytes,), "int8", data=w.data)
        s_flat = T.decl_buffer((n_tiles * w_groups * tile,), scales, data=s.data)
        xq = T.alloc_buffer((rows_padded, k_in // 4), "int32")  # 4 int8 per word
        xq8 = T.decl_buffer((rows_padded, k_in), "int8", data=xq.data)
        xs = T.alloc_buffer((rows_padded, a_groups), "float32")
        code_sum = T.alloc_buffer((rows_padded, w_groups), "int32")  # sum(xq) per weight group
        x_sum = T.alloc_buffer((rows_padded, w_groups), "float32")  # xs * sum(xq) per weight group
        if prologue is None:
            quantize(x, xq8, xs, code_sum, x_sum)
        else:  # a fused decode kernel: the row the linear layer takes, then as above
            xf = T.alloc_buffer((1, k_in), "float32")
            prologue(x, norm, xf, 0)
            quantize(xf, xq8, xs, code_sum, x_sum)
        for t in T.parallel(n_tiles):
            acc = T.alloc_buffer((row_block, tile), "float32", scope="local")
            dot = T.alloc_buffer((row_block, sub, lanes), "int32", scope="local")
            for b in range(blocks):
                for i, n in T.grid(row_block, tile):
                    acc[i, n] = T.float32(0)
                for g in range(w_groups):
                    if prefetching:
                        for line in T.unroll(group_bytes // CACHE_LINE):
                            T.evaluate(_prefetch(w_flat, (t * w_groups + g + ahead) * group_bytes + line * CACHE_LINE))
                        for line in T.unroll(-(-tile // scales_per_line)):
                            T.evaluate(_prefetch(s_flat, (t * w_groups + g + ahead) * tile + line * scales_per_line))
                    for i in T.unroll(row_block):
                        for u in T.unroll(sub):
                            dot[i, u, T.ramp(0, 1, lanes)] = _dot_start(spec, code_sum[b * row_block + i, g])
                    for c in T.unroll(chunks):
                        for u in T.unroll(sub):
                            for i in T.unroll(row_block):
                                dot[i, u, T.ramp(0, 1, lanes)] = _dot_step(
                                    spec,
                                    _lanes(dot, i, u, 0, lanes=lanes),
                                    _lanes(w_flat, (t * w_groups + g) * group_bytes + c * chunk_bytes + u * 4 * lanes, lanes=4 * lanes),
                                    _quad(xq, b * row_block + i, g * chunks + c, lanes),
                                )
                    for u in T.unroll(sub):
                        for i in T.unroll(row_block):
                            acc[i, T.ramp(u * lanes, 1, lanes)] = _with_min(
                                with_min,
                                _lanes(acc, i, u * lanes, lanes=lanes)
                                + T.Cast(f"float32x{lanes}", _lanes(dot, i, u, 0, lanes=lanes))
                                * (
                                    T.Cast(f"float32x{lanes}", _lanes(s, t, g, u * lanes, lanes=lanes))
                                    * xs[b * row_block + i, g // per_activation]
                                ),
                                low,
                                t,
                                g,
                                u * lanes,
                                lanes,
                                x_sum[b * row_block + i, g],
                            )
                for i in T.unroll(row_block):
                    if b * row_block + i < rows:
                        for n in T.vectorized(tile):
                            if add_residual:
                                y[b * row_block + i, t * tile + n] = stored_as(acc[i, n] + residual[b * row_block + i, t * tile + n], y.dtype)
                            else:
                                y[b * row_block + i, t * tile + n] = stored_as(acc[i, n], y.dtype)

    @T.prim_func(private=True)
    def kernel(
        x: T.Buffer((rows, x_width), fusion.input_dtype),
        norm: T.Buffer((k_in,), "float32"),
        w: T.Buffer(weight_shape, "int8"),
        s: T.Buffer((n_tiles, w_groups, tile), scales),
        low: T.Buffer(min_shape, scales),
        residual: T.Buffer((rows, n_out), "float32"),
        y: T.Buffer((rows, n_out), fusion.output_dtype),
    ):
        T.func_attr({"tirx.noalias": True})
        if with_min:
            body(x, norm, w, s, low, residual, y)
        else:
            body(x, norm, w, s, None, residual, y)

    # Written once with every input; each variant keeps those its body reads.
    return keep_params(kernel, [True, fusion.prologue == "rms_norm", True, True, with_min, add_residual, True])


def _with_min(with_min: bool, value, low: tirx.Buffer, t, g, start, lanes: int, x_sum) -> tirx.PrimExpr:
    """value plus min[n, g] * xs * sum(xq over the group) for kinds with a min."""
    if not with_min:
        return value
    return value + T.Cast(f"float32x{lanes}", _lanes(low, t, g, start, lanes=lanes)) * x_sum
