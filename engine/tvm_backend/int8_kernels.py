"""The int8-activation kernels for 4-bit linear layers (TANDEM_CPU_MATMUL=int8), in one variant
per instruction set (Int8Isa), the fastest the host has chosen at run time (int8_isa).

Each row of x is quantized to int8 per group of 32 (xs = max|x| / 127, xq = round(x / xs)), then
integer dot products multiply the unsigned 4-bit weight codes by xq, four products per 32-bit
lane: `vpdpbusd` on zmm (AVX512-VNNI) or ymm (AVX-VNNI), `vpmaddubsw` + `vpmaddwd` on AVX2, `sdot`
on ARM (the codes 0..15 are valid signed bytes). A 4-bit weight is code * scale + min per group
of 32, so per output n and group g: y[n] += wscale * xs * sum(code * xq) + wmin * xs * sum(xq).
Where the min is a whole number of scales (MLC's q4: -7 * scale; llama.cpp's q4_0: -8 * scale;
see kernels.INT8_ZERO_POINTS) it folds into the integer dot, dot = sum(code * xq) - zp * sum(xq),
and no min is stored; otherwise (q4_1, q4_k) the layout holds a min per group beside the scale.
(The min term takes the rounded activations' sum, not sum(x): then the error is the dequantized
weight times the rounding error, centred, rather than the uncentred code times it.)

Weight layout (LinearShape.weight_shapes gives its shape; repack.py fills it, and its
REPACK_LAYOUT names it: change both together): per tile of `tile` output rows (16 or 32) and
group, four chunks of 4 * tile bytes. Byte 4*r + b of chunk c holds, for output row r of the
tile, the codes of k = 8c + b (low nibble) and k = 8c + 4 + b (high nibble), so one load masked
with 0x0F and one shifted right by 4 are the u8 operands of two dot products, each meeting four
broadcast xq. A register of L int32 lanes covers L consecutive rows, 4L consecutive bytes: the
layout is the same for every variant, so the weight cache serves them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from tvm import tirx
from tvm.script import tirx as T
from tvm.target import Target
from tvm.target.codegen import target_has_features

from engine.tvm_backend.int8_decode import DecodeFusion, keep_params, write_prologue
from engine.tvm_backend.kernels import (
    KERNEL_ATTR,
    Q4_GROUP,
    VNNI_CHUNKS,
    VNNI_LANES,
    LinearShape,
    as_float32,
    int8_zero_point,
    q4_groups,
    scale_dtype,
    stored_as,
)

LANES = VNNI_LANES
PREFETCH_AHEAD_BYTES = 4096
"""How far ahead of its reads a decode kernel prefetches the weight stream: the hardware
prefetchers alone left decode at about 2/3 of this speed (measured on the 135M shape)."""
CACHE_LINE = 64

Int8Isa = Literal["avx512-vnni", "avx-vnni", "avx2", "neon-dotprod"]
INT8_ISA_ENV = "TANDEM_INT8_ISA"
"""Forces one int8 variant (it must be one the CPU has); by default the fastest the CPU has."""


@dataclass(frozen=True)
class IsaSpec:
    lanes: int
    """int32 lanes of one vector register: the output rows one dot product instruction covers."""
    features: tuple[str, ...]
    """LLVM target features the variant needs."""
    dot: Literal["dpbusd", "maddubs", "sdot"]
    intrinsic: str


ISAS: dict[Int8Isa, IsaSpec] = {
    # LLVM 22 declares vpdpbusd as (<L x i32> acc, <4L x i8> unsigned, <4L x i8> signed) -> <L x i32>;
    # with +avxvnni and no AVX-512 the 256-bit form is emitted with the VEX encoding.
    "avx512-vnni": IsaSpec(16, ("avx512vnni",), "dpbusd", "llvm.x86.avx512.vpdpbusd.512"),
    "avx-vnni": IsaSpec(8, ("avxvnni",), "dpbusd", "llvm.x86.avx512.vpdpbusd.256"),
    "avx2": IsaSpec(8, ("avx2",), "maddubs", "llvm.x86.avx2.pmadd.ub.sw"),
    "neon-dotprod": IsaSpec(4, ("neon", "dotprod"), "sdot", "llvm.aarch64.neon.sdot"),
}
"""Fastest first: int8_isa picks the first the target has."""
_PMADDWD = "llvm.x86.avx2.pmadd.wd"
_CURRENT_ISA: ContextVar[Int8Isa | None] = ContextVar("tandem_int8_isa", default=None)


def available_isas(target: Target | None) -> list[Int8Isa]:
    """The int8 variants `target` can run, fastest first."""
    if target is None or target.kind.name != "llvm":
        return []
    return [name for name, spec in ISAS.items() if all(target_has_features(f, target) for f in spec.features)]


def int8_isa(target: Target | None, forced: str | None = None) -> Int8Isa | None:
    """The variant for `target`: `forced` (default $TANDEM_INT8_ISA) when set, else the fastest it
    has; None when it has none. A forced variant the target lacks is a ValueError naming both."""
    available = available_isas(target)
    wanted = (forced if forced is not None else os.environ.get(INT8_ISA_ENV, "")).strip().lower()
    if not wanted:
        return available[0] if available else None
    if wanted not in ISAS:
        raise ValueError(f"Unknown int8 variant {wanted!r} in {INT8_ISA_ENV}; use one of {', '.join(ISAS)}.")
    if wanted not in available:
        raise ValueError(
            f"{INT8_ISA_ENV}={wanted} asks for instructions this CPU lacks "
            f"(it has: {', '.join(available) or 'none of them'}); unset it or pick one of those."
        )
    return wanted  # type: ignore[return-value]


def supports_int8(target: Target | None) -> bool:
    """Whether `target` can run some int8 variant (AVX512-VNNI, AVX-VNNI, AVX2 or NEON dotprod)."""
    return bool(available_isas(target))


@contextmanager
def int8_isa_scope(isa: Int8Isa | None) -> Iterator[None]:
    """int8 kernels built in this scope use `isa` (the compiler enters it with the target's);
    outside one, they use the variant the target in scope has (int8_isa)."""
    token = _CURRENT_ISA.set(isa)
    try:
        yield
    finally:
        _CURRENT_ISA.reset(token)


def int8_tile(n_out: int) -> int | None:
    """Output rows per tile: 32 (two accumulator registers, for instruction-level parallelism)
    when they divide n_out, else 16; None when n_out is not a multiple of 16."""
    for tile in (2 * LANES, LANES):
        if n_out % tile == 0:
            return tile
    return None


def prefill_rows(tile: int, lanes: int = LANES) -> int:
    """Prompt rows sharing each unpacked weight chunk. AVX-512: 8 registers' worth of int32 dots
    (and as many float accumulators) beside the weights and broadcasts; with a 32-wide tile, 4
    rows of 2 (measured fastest of 4, 6 and 8 rows), a 16-wide tile 8. Narrower registers: 16
    registers' worth, up to 8 rows (AVX2, 32-wide tile: 4 rows measured 5-10% faster than 2;
    3 and 6 within the noise)."""
    registers = 8 if lanes == LANES else 16
    return max(1, min(8, registers // (tile // lanes)))


def int8_linear_kernel(
    shape: LinearShape, phase: Literal["decode", "prefill"], isa: Int8Isa | None = None
) -> tirx.PrimFunc:
    """y[rows, n_out] = x[rows, k_in] @ W.T with int8 activations, W in the VNNI layout, for
    `isa` (default: the scope's, see int8_isa_scope).

    decode: one row; prefill: a symbolic number of rows, in blocks of prefill_rows(tile)."""
    return _int8_linear_kernel(shape, phase, isa_in_scope(isa))


def isa_in_scope(isa: Int8Isa | None) -> Int8Isa:
    """`isa`, else the one int8_isa_scope set, else the fastest the target in scope has."""
    chosen = isa or _CURRENT_ISA.get() or int8_isa(Target.current(allow_none=True))
    if chosen is None:
        raise ValueError("No int8 variant for the target in scope; build the float kernels instead.")
    return chosen


def phase_kernel(build: Callable[..., tirx.PrimFunc], shape: LinearShape,
                 phase: Literal["decode", "prefill"], isa: Int8Isa) -> tirx.PrimFunc:
    """`build(shape, rows, row_block, spec)` for one phase (decode: one row; prefill: a symbolic
    number in blocks of prefill_rows), marked as an opaque, already scheduled int8 linear kernel."""
    spec = ISAS[isa]
    if phase == "decode":
        func = build(shape, 1, 1, spec)
    else:
        func = build(shape, tirx.Var("rows", "int64"), prefill_rows(shape.tile, spec.lanes), spec)
    # Opaque: relax must neither fuse neighbours into this kernel nor re-schedule it.
    return func.with_attrs({"tirx.is_scheduled": True, "op_pattern": 8, KERNEL_ATTR: "linear_int8"})


@lru_cache(maxsize=None)
def _int8_linear_kernel(shape: LinearShape, phase: Literal["decode", "prefill"], isa: Int8Isa) -> tirx.PrimFunc:
    return phase_kernel(_kernel, shape, phase, isa)


def _dot_step(spec: IsaSpec, acc: tirx.PrimExpr, codes: tirx.PrimExpr, activations: tirx.PrimExpr) -> tirx.PrimExpr:
    """acc plus, per 32-bit lane, the dot product of its four u8 codes and four s8 activations;
    with maddubs (AVX2) acc holds int16 pairs (2L lanes) that _dot_finish widens."""
    lanes = spec.lanes
    if spec.dot == "maddubs":
        pairs = T.call_llvm_pure_intrin(f"int16x{2 * lanes}", spec.intrinsic, codes, activations)
        return acc + pairs
    if spec.dot == "sdot":  # signed x signed: the codes 0..15 read the same as s8
        codes = T.reinterpret(f"int8x{4 * lanes}", codes)
    return T.call_llvm_pure_intrin(f"int32x{lanes}", spec.intrinsic, acc, codes, activations)


def _dot_start(spec: IsaSpec, zero_point_sum: tirx.PrimExpr) -> tirx.PrimExpr:
    """A group's accumulator before its first code: the zero-point term (int32 variants), or
    zero int16 pairs (AVX2, which adds the zero-point term when it widens them)."""
    if spec.dot == "maddubs":
        return tirx.Broadcast(tirx.const(0, "int16"), 2 * spec.lanes)
    return T.broadcast(zero_point_sum, spec.lanes)


def _dot_finish(spec: IsaSpec, acc: tirx.PrimExpr, zero_point_sum: tirx.PrimExpr) -> tirx.PrimExpr:
    """The group's int32 dot per lane. AVX2 sums its int16 pairs with vpmaddwd by ones: 8 pair
    sums of at most 2 * 15 * 127 each stay below 2^15, so the int16 adds cannot overflow."""
    if spec.dot != "maddubs":
        return acc
    ones = tirx.Broadcast(tirx.const(1, "int16"), 2 * spec.lanes)
    widened = T.call_llvm_pure_intrin(f"int32x{spec.lanes}", _PMADDWD, acc, ones)
    return widened + T.broadcast(zero_point_sum, spec.lanes)


def _nibbles(w_flat: tirx.Buffer, start, lanes: int, high: bool) -> tirx.PrimExpr:
    """4 * lanes bytes of the VNNI layout from `start` as u8 codes: their low or high nibbles."""
    chunk = tirx.BufferLoad(w_flat, [tirx.Ramp(start, 1, 4 * lanes)])
    if high:
        return chunk >> tirx.Broadcast(tirx.const(4, "uint8"), 4 * lanes)
    return chunk & tirx.Broadcast(tirx.const(15, "uint8"), 4 * lanes)


def _quad(xq: tirx.Buffer, row, word, lanes: int) -> tirx.PrimExpr:
    """Four int8 activations (one int32 word of xq) repeated in every 32-bit lane."""
    return T.reinterpret(f"int8x{4 * lanes}", T.broadcast(xq[row, word], lanes))


def _lanes(buffer: tirx.Buffer, *index, lanes: int = LANES) -> tirx.PrimExpr:
    """`lanes` consecutive elements along the last axis, from `index`."""
    *outer, start = index
    return tirx.BufferLoad(buffer, [*outer, tirx.Ramp(start, 1, lanes)])


def _prefetch(flat: tirx.Buffer, offset) -> tirx.PrimExpr:
    """Hint the cache line of flat[offset] (clamped to the buffer) into all cache levels."""
    last = flat.shape[0] - 1
    address = tirx.address_of(tirx.BufferLoad(flat, [tirx.min(offset, last)]))
    return T.call_llvm_intrin("void", "llvm.prefetch.p0", address, 0, 3, 1)


def _group_half(x: tirx.Buffer, m, g, half: int, k_in: int) -> tirx.PrimExpr:
    """x[m, 32g + 16 half : +16] as a float32x16; past k_in (MLC's ragged last group) zeros,
    read through a clamped gather in that group only."""
    start = g * Q4_GROUP + half * LANES
    contiguous = as_float32(_lanes(x, m, start))
    if k_in % Q4_GROUP == 0:
        return contiguous
    lanes = tirx.Ramp(start, 1, LANES)
    clamped = as_float32(tirx.BufferLoad(x, [m, tirx.Min(lanes, tirx.Broadcast(k_in - 1, LANES))]))
    zeros = tirx.Broadcast(tirx.const(0, "float32"), LANES)
    masked = tirx.Select(lanes < tirx.Broadcast(k_in, LANES), clamped, zeros)
    return tirx.if_then_else(g < k_in // Q4_GROUP, contiguous, masked)


def _kernel(shape: LinearShape, rows, row_block: int, spec: IsaSpec, fusion: DecodeFusion | None = None) -> tirx.PrimFunc:
    """The kernel of `shape`; with `fusion` (one row only, see int8_decode) its prologue before
    the quantization and its residual after the dot products."""
    k_in, n_out, tile = shape.k_in, shape.n_out, shape.tile
    fusion = fusion or DecodeFusion()
    prologue = write_prologue(fusion, k_in)
    add_residual = fusion.residual
    x_width = fusion.input_width(k_in)
    groups = q4_groups(k_in)
    lanes = spec.lanes
    sub = tile // lanes  # registers per tile row
    chunk_bytes = 4 * tile
    acc_dtype, acc_lanes = ("int16", 2 * lanes) if spec.dot == "maddubs" else ("int32", lanes)
    n_tiles = n_out // tile
    blocks = (rows + row_block - 1) // row_block
    rows_padded = blocks * row_block
    weight_shape = shape.weight_shapes()["q_weight"][0]
    scales = scale_dtype(shape.kind)
    zero_point = int8_zero_point(shape.kind)
    stored_min = zero_point is None
    group_bytes = VNNI_CHUNKS * chunk_bytes  # one tile's codes for one group
    scales_per_line = CACHE_LINE // (2 if scales == "float16" else 4)
    scale_lines = -(-tile // scales_per_line)  # and the lines of its `tile` scales (and mins)
    ahead = PREFETCH_AHEAD_BYTES // group_bytes
    prefetching = isinstance(rows, int)  # decode streams the weights; prefill reuses each tile
    # One decode row is too little work to share between threads.
    quantize_loop = T.serial if isinstance(rows, int) else T.parallel

    quantize_row = quantize_row_macro(k_in, zero_point, scale_scope="local")

    @T.macro
    def quantize(source, xq8, xs, zero_point_sum, x_sum):
        # Padding rows stay unquantized: their sums are computed but never stored.
        for m in quantize_loop(rows):
            quantize_row(source, xq8, xs, zero_point_sum, x_sum, m)

    @T.macro
    def body(x, norm, w, s, low, residual, y):
        w_flat = T.decl_buffer((n_tiles * groups * group_bytes,), "uint8", data=w.data)
        s_flat = T.decl_buffer((n_tiles * groups * tile,), scales, data=s.data)
        low_flat = T.decl_buffer((n_tiles * groups * tile,), scales, data=low.data)
        xq = T.alloc_buffer((rows_padded, groups * Q4_GROUP // 4), "int32")  # 4 int8 per word
        xq8 = T.decl_buffer((rows_padded, groups * Q4_GROUP), "int8", data=xq.data)
        xs = T.alloc_buffer((rows_padded, groups), "float32")
        zero_point_sum = T.alloc_buffer((rows_padded, groups), "int32")  # -zp * sum(xq)
        x_sum = T.alloc_buffer((rows_padded, groups), "float32")  # xs * sum(xq), for a stored min
        if prologue is None:
            quantize(x, xq8, xs, zero_point_sum, x_sum)
        else:  # a fused decode kernel: the row the linear layer takes, then as above
            xf = T.alloc_buffer((1, k_in), "float32")
            prologue(x, norm, xf, 0)
            quantize(xf, xq8, xs, zero_point_sum, x_sum)
        for t in T.parallel(n_tiles):
            acc = T.alloc_buffer((row_block, tile), "float32", scope="local")
            dot = T.alloc_buffer((row_block, sub, acc_lanes), acc_dtype, scope="local")
            for b in range(blocks):
                for i, n in T.grid(row_block, tile):
                    acc[i, n] = T.float32(0)
                for g in range(groups):
                    if prefetching:
                        for line in T.unroll(group_bytes // CACHE_LINE):
                            T.evaluate(_prefetch(w_flat, (t * groups + g + ahead) * group_bytes + line * CACHE_LINE))
                        for line in T.unroll(scale_lines):
                            T.evaluate(_prefetch(s_flat, (t * groups + g + ahead) * tile + line * scales_per_line))
                        if stored_min:
                            for line in T.unroll(scale_lines):
                                T.evaluate(_prefetch(low_flat, (t * groups + g + ahead) * tile + line * scales_per_line))
                    # Each row's integer dot starts at its zero-point term: no correction after.
                    for i in T.unroll(row_block):
                        for u in T.unroll(sub):
                            dot[i, u, T.ramp(0, 1, acc_lanes)] = _dot_start(spec, _start_sum(zero_point_sum, b * row_block + i, g, stored_min))
                    for c in T.unroll(VNNI_CHUNKS):
                        for u in T.unroll(sub):
                            for i in T.unroll(row_block):
                                # k = 8c..8c+3 in the low nibbles (xq word 2c), 8c+4..8c+7 in the high ones
                                dot[i, u, T.ramp(0, 1, acc_lanes)] = _dot_step(
                                    spec,
                                    _dot_step(
                                        spec,
                                        _lanes(dot, i, u, 0, lanes=acc_lanes),
                                        _nibbles(w_flat, (t * groups + g) * group_bytes + c * chunk_bytes + u * 4 * lanes, lanes, False),
                                        _quad(xq, b * row_block + i, g * 8 + 2 * c, lanes),
                                    ),
                                    _nibbles(w_flat, (t * groups + g) * group_bytes + c * chunk_bytes + u * 4 * lanes, lanes, True),
                                    _quad(xq, b * row_block + i, g * 8 + 2 * c + 1, lanes),
                                )
                    for u in T.unroll(sub):
                        for i in T.unroll(row_block):
                            # float(dot) * weight scale * activation scale (+ weight min * xs * sum(xq))
                            acc[i, T.ramp(u * lanes, 1, lanes)] = _with_min(
                                stored_min,
                                _lanes(acc, i, u * lanes, lanes=lanes)
                                + T.Cast(
                                    f"float32x{lanes}",
                                    _dot_finish(spec, _lanes(dot, i, u, 0, lanes=acc_lanes), _start_sum(zero_point_sum, b * row_block + i, g, stored_min)),
                                )
                                * (T.Cast(f"float32x{lanes}", _lanes(s, t, g, u * lanes, lanes=lanes)) * xs[b * row_block + i, g]),
                                _lanes(low, t, g, u * lanes, lanes=lanes),
                                x_sum[b * row_block + i, g],
                                lanes,
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
        w: T.Buffer(weight_shape, "uint8"),
        s: T.Buffer((n_tiles, groups, tile), scales),
        low: T.Buffer((n_tiles, groups, tile), scales),
        residual: T.Buffer((rows, n_out), "float32"),
        y: T.Buffer((rows, n_out), fusion.output_dtype),
    ):
        T.func_attr({"tirx.noalias": True})
        if stored_min:
            body(x, norm, w, s, low, residual, y)
        else:
            body(x, norm, w, s, s, residual, y)  # no min: its reads are never generated

    # Written once with every input; each variant keeps those its body reads.
    return keep_params(kernel, [True, fusion.prologue == "rms_norm", True, True, stored_min, add_residual, True])


def _with_min(
    stored_min: bool, updated: tirx.PrimExpr, mins: tirx.PrimExpr, x_sum: tirx.PrimExpr, lanes: int
) -> tirx.PrimExpr:
    """The accumulators after a group, plus its stored-min term wmin * sum(x) where it has one."""
    if not stored_min:
        return updated
    return updated + T.Cast(f"float32x{lanes}", mins) * x_sum


def quantize_row_macro(k_in: int, zero_point: int | None, scale_scope: str):
    """A macro (source, xq8, xs, zero_point_sum, x_sum, m) quantizing row m of `source` to int8
    per group of 32 (scale max |x| / 127, in xs), with each group's code sum as the kernel needs
    it: xs * sum(xq) in x_sum where the weight's min is stored (zero_point None), else -zp *
    sum(xq) in zero_point_sum. The one-row kernels keep the row's scale pair in registers
    (scale_scope "local"); the many-row kernels, one row per parallel task, on the stack."""
    groups = q4_groups(k_in)

    @T.macro
    def quantize_row(source, xq8, xs, zero_point_sum, x_sum, m):
        scale = T.alloc_buffer((2,), "float32", scope=scale_scope)  # max |x|, then 127 / max |x|
        for g in range(groups):
            half_low = _group_half(source, m, g, 0, k_in)
            half_high = _group_half(source, m, g, 1, k_in)
            scale[0] = T.call_llvm_pure_intrin(
                "float32", "llvm.vector.reduce.fmax", T.max(T.fabs(half_low), T.fabs(half_high))
            )
            xs[m, g] = scale[0] / T.float32(127)
            scale[1] = T.if_then_else(scale[0] > T.float32(0), T.float32(127) / scale[0], T.float32(0))
            xq8[m, T.ramp(g * Q4_GROUP, 1, LANES)] = T.Cast("int8x16", T.nearbyint(half_low * scale[1]))
            xq8[m, T.ramp(g * Q4_GROUP + LANES, 1, LANES)] = T.Cast("int8x16", T.nearbyint(half_high * scale[1]))
            if zero_point is None:
                x_sum[m, g] = xs[m, g] * T.Cast("float32", _xq_sum(xq8, m, g))
            else:
                zero_point_sum[m, g] = -zero_point * _xq_sum(xq8, m, g)

    return quantize_row


def _xq_sum(xq8: tirx.Buffer, m, g) -> tirx.PrimExpr:
    """sum(xq) over group g of row m, as int32."""
    return T.call_llvm_pure_intrin(
        "int32",
        "llvm.vector.reduce.add",
        T.Cast("int32x16", _lanes(xq8, m, g * Q4_GROUP)) + T.Cast("int32x16", _lanes(xq8, m, g * Q4_GROUP + LANES)),
    )


def _start_sum(zero_point_sum: tirx.Buffer, row, g, stored_min: bool) -> tirx.PrimExpr:
    """The group's integer zero-point term (-zp * sum(xq)); zero where the min is stored."""
    return tirx.const(0, "int32") if stored_min else zero_point_sum[row, g]
