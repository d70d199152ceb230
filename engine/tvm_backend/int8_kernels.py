"""The int8-activation kernels for 4-bit linear layers on AVX512-VNNI CPUs (TANDEM_CPU_MATMUL=int8).

Each row of x is quantized to int8 per group of 32 (xs = max|x| / 127, xq = round(x / xs)), then
`vpdpbusd` multiplies the unsigned 4-bit weight codes by xq, four products per 32-bit lane, and
sums them in int32. Per output n and group g: dot = sum(code * xq) - 7 * sum(xq) (MLC's codes
are 0..14 around 7), and y[n] = sum over g of wscale[n, g] * xs[g] * dot.

Weight layout (LinearShape.weight_shapes gives its shape; repack.py fills it, and its
REPACK_LAYOUT names it: change both together): per tile of `tile` output rows (16 or 32) and
group, four 64-byte chunks per 16 rows. Byte 4*i + b of chunk c holds, for output row i, the
codes of k = 8c + b (low nibble) and k = 8c + 4 + b (high nibble), so one load masked with 0x0F
and one shifted right by 4 are the u8 operands of two vpdpbusd, each meeting four broadcast xq.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from tvm import tirx
from tvm.script import tirx as T
from tvm.target import Target
from tvm.target.codegen import target_has_features

from engine.tvm_backend.kernels import (
    KERNEL_ATTR,
    Q4_GROUP,
    VNNI_CHUNKS,
    VNNI_LANES,
    LinearShape,
    q4_groups,
    scale_dtype,
)

LANES = VNNI_LANES
ZERO_POINT = 7
"""MLC's q4 codes are 0..14; the weight is (code - 7) * scale."""
PREFETCH_AHEAD_BYTES = 4096
"""How far ahead of its reads a decode kernel prefetches the weight stream: the hardware
prefetchers alone left decode at about 2/3 of this speed (measured on the 135M shape)."""
CACHE_LINE = 64
_VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"
"""LLVM 22 declares it as (<16 x i32> acc, <64 x i8> unsigned, <64 x i8> signed) -> <16 x i32>."""


def supports_int8(target: Target | None) -> bool:
    """Whether `target` has AVX512-VNNI (the int8 kernels use nothing else beyond AVX-512)."""
    return target is not None and target.kind.name == "llvm" and target_has_features("avx512vnni", target)


def int8_tile(n_out: int) -> int | None:
    """Output rows per tile: 32 (two accumulator registers, for instruction-level parallelism)
    when they divide n_out, else 16; None when n_out is not a multiple of 16."""
    for tile in (2 * LANES, LANES):
        if n_out % tile == 0:
            return tile
    return None


def prefill_rows(tile: int) -> int:
    """Prompt rows sharing each unpacked weight chunk: with a 32-wide tile, 4 rows of 2 int32
    dot and 2 float accumulator registers, beside the weights and broadcasts (measured fastest
    of 4, 6 and 8 rows; a 16-wide tile takes 8)."""
    return 4 if tile == 2 * LANES else 8


@lru_cache(maxsize=None)
def int8_linear_kernel(shape: LinearShape, phase: Literal["decode", "prefill"]) -> tirx.PrimFunc:
    """y[rows, n_out] = x[rows, k_in] @ W.T with int8 activations, W in the VNNI layout.

    decode: one row; prefill: a symbolic number of rows, in blocks of prefill_rows(tile)."""
    if phase == "decode":
        func = _kernel(shape, 1, 1)
    else:
        func = _kernel(shape, tirx.Var("rows", "int64"), prefill_rows(shape.tile))
    # Opaque: relax must neither fuse neighbours into this kernel nor re-schedule it.
    return func.with_attrs({"tirx.is_scheduled": True, "op_pattern": 8, KERNEL_ATTR: "linear_int8"})


def _vpdpbusd(acc: tirx.PrimExpr, codes: tirx.PrimExpr, activations: tirx.PrimExpr) -> tirx.PrimExpr:
    """acc + in each 32-bit lane the dot product of its four u8 codes and four s8 activations."""
    return T.call_llvm_pure_intrin("int32x16", _VPDPBUSD, acc, codes, activations)


def _nibbles(w: tirx.Buffer, t, g, c, u, high: bool) -> tirx.PrimExpr:
    """One 64-byte chunk of the VNNI layout as u8 codes: its low or its high nibbles."""
    chunk = tirx.BufferLoad(w, [t, g, c, u, tirx.Ramp(0, 1, 4 * LANES)])
    if high:
        return chunk >> tirx.Broadcast(tirx.const(4, "uint8"), 4 * LANES)
    return chunk & tirx.Broadcast(tirx.const(15, "uint8"), 4 * LANES)


def _quad(xq: tirx.Buffer, row, word) -> tirx.PrimExpr:
    """Four int8 activations (one int32 word of xq) repeated in every 32-bit lane."""
    return T.reinterpret("int8x64", T.broadcast(xq[row, word], LANES))


def _lanes(buffer: tirx.Buffer, *index) -> tirx.PrimExpr:
    """LANES consecutive elements along the last axis, from `index`."""
    *outer, start = index
    return tirx.BufferLoad(buffer, [*outer, tirx.Ramp(start, 1, LANES)])


def _prefetch(flat: tirx.Buffer, offset) -> tirx.PrimExpr:
    """Hint the cache line of flat[offset] (clamped to the buffer) into all cache levels."""
    last = flat.shape[0] - 1
    address = tirx.address_of(tirx.BufferLoad(flat, [tirx.min(offset, last)]))
    return T.call_llvm_intrin("void", "llvm.prefetch.p0", address, 0, 3, 1)


def _group_half(x: tirx.Buffer, m, g, half: int, k_in: int) -> tirx.PrimExpr:
    """x[m, 32g + 16 half : +16] as a float32x16; past k_in (MLC's ragged last group) zeros,
    read through a clamped gather in that group only."""
    start = g * Q4_GROUP + half * LANES
    contiguous = _lanes(x, m, start)
    if k_in % Q4_GROUP == 0:
        return contiguous
    lanes = tirx.Ramp(start, 1, LANES)
    clamped = tirx.BufferLoad(x, [m, tirx.Min(lanes, tirx.Broadcast(k_in - 1, LANES))])
    zeros = tirx.Broadcast(tirx.const(0, "float32"), LANES)
    masked = tirx.Select(lanes < tirx.Broadcast(k_in, LANES), clamped, zeros)
    return tirx.if_then_else(g < k_in // Q4_GROUP, contiguous, masked)


def _kernel(shape: LinearShape, rows, row_block: int) -> tirx.PrimFunc:
    k_in, n_out, tile = shape.k_in, shape.n_out, shape.tile
    groups = q4_groups(k_in)
    sub = tile // LANES
    n_tiles = n_out // tile
    blocks = (rows + row_block - 1) // row_block
    rows_padded = blocks * row_block
    weight_shape = shape.weight_shapes()["q_weight"][0]
    scales = scale_dtype(shape.kind)
    group_bytes = VNNI_CHUNKS * sub * 4 * LANES  # one tile's codes for one group
    scales_per_line = CACHE_LINE // (2 if scales == "float16" else 4)
    scale_lines = -(-tile // scales_per_line)  # and the lines of its `tile` scales
    ahead = PREFETCH_AHEAD_BYTES // group_bytes
    prefetching = isinstance(rows, int)  # decode streams the weights; prefill reuses each tile
    # One decode row is too little work to share between threads.
    quantize_loop = T.serial if isinstance(rows, int) else T.parallel

    @T.prim_func(private=True)
    def kernel(
        x: T.Buffer((rows, k_in), "float32"),
        w: T.Buffer(weight_shape, "uint8"),
        s: T.Buffer((n_tiles, groups, tile), scales),
        y: T.Buffer((rows, n_out), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        w_flat = T.decl_buffer((n_tiles * groups * group_bytes,), "uint8", data=w.data)
        s_flat = T.decl_buffer((n_tiles * groups * tile,), scales, data=s.data)
        xq = T.alloc_buffer((rows_padded, groups * Q4_GROUP // 4), "int32")  # 4 int8 per word
        xq8 = T.decl_buffer((rows_padded, groups * Q4_GROUP), "int8", data=xq.data)
        xs = T.alloc_buffer((rows_padded, groups), "float32")
        zero_point_sum = T.alloc_buffer((rows_padded, groups), "int32")  # -7 * sum(xq)
        # Padding rows stay unquantized: their sums are computed but never stored.
        for m in quantize_loop(rows):
            scale = T.alloc_buffer((2,), "float32", scope="local")  # max |x|, then 127 / max |x|
            for g in range(groups):
                low = _group_half(x, m, g, 0, k_in)
                high = _group_half(x, m, g, 1, k_in)
                scale[0] = T.call_llvm_pure_intrin(
                    "float32", "llvm.vector.reduce.fmax", T.max(T.fabs(low), T.fabs(high))
                )
                xs[m, g] = scale[0] / T.float32(127)
                scale[1] = T.if_then_else(scale[0] > T.float32(0), T.float32(127) / scale[0], T.float32(0))
                xq8[m, T.ramp(g * Q4_GROUP, 1, LANES)] = T.Cast("int8x16", T.nearbyint(low * scale[1]))
                xq8[m, T.ramp(g * Q4_GROUP + LANES, 1, LANES)] = T.Cast("int8x16", T.nearbyint(high * scale[1]))
                zero_point_sum[m, g] = -ZERO_POINT * T.call_llvm_pure_intrin(
                    "int32",
                    "llvm.vector.reduce.add",
                    T.Cast("int32x16", _lanes(xq8, m, g * Q4_GROUP))
                    + T.Cast("int32x16", _lanes(xq8, m, g * Q4_GROUP + LANES)),
                )
        for t in T.parallel(n_tiles):
            acc = T.alloc_buffer((row_block, tile), "float32", scope="local")
            dot = T.alloc_buffer((row_block, sub, LANES), "int32", scope="local")
            for b in range(blocks):
                for i, n in T.grid(row_block, tile):
                    acc[i, n] = T.float32(0)
                for g in range(groups):
                    if prefetching:
                        for line in T.unroll(group_bytes // CACHE_LINE):
                            T.evaluate(_prefetch(w_flat, (t * groups + g + ahead) * group_bytes + line * CACHE_LINE))
                        for line in T.unroll(scale_lines):
                            T.evaluate(_prefetch(s_flat, (t * groups + g + ahead) * tile + line * scales_per_line))
                    # Each row's integer dot starts at its zero-point term: no correction after.
                    for i in T.unroll(row_block):
                        for u in T.unroll(sub):
                            dot[i, u, T.ramp(0, 1, LANES)] = T.broadcast(zero_point_sum[b * row_block + i, g], LANES)
                    for c in T.unroll(VNNI_CHUNKS):
                        for u in T.unroll(sub):
                            for i in T.unroll(row_block):
                                # k = 8c..8c+3 in the low nibbles (xq word 2c), 8c+4..8c+7 in the high ones
                                dot[i, u, T.ramp(0, 1, LANES)] = _vpdpbusd(
                                    _vpdpbusd(
                                        _lanes(dot, i, u, 0),
                                        _nibbles(w, t, g, c, u, False),
                                        _quad(xq, b * row_block + i, g * 8 + 2 * c),
                                    ),
                                    _nibbles(w, t, g, c, u, True),
                                    _quad(xq, b * row_block + i, g * 8 + 2 * c + 1),
                                )
                    for u in T.unroll(sub):
                        for i in T.unroll(row_block):
                            # float(dot) * weight scale * activation scale
                            acc[i, T.ramp(u * LANES, 1, LANES)] = _lanes(acc, i, u * LANES) + T.Cast(
                                "float32x16", _lanes(dot, i, u, 0)
                            ) * (T.Cast("float32x16", _lanes(s, t, g, u * LANES)) * xs[b * row_block + i, g])
                for i in T.unroll(row_block):
                    if b * row_block + i < rows:
                        for n in T.vectorized(tile):
                            y[b * row_block + i, t * tile + n] = acc[i, n]

    return kernel
