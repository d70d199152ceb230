"""Hand-scheduled CPU kernels for the linear layers: dense and 4-bit weights, decode and prefill.

Weights arrive in Tandem's tiled layout (see engine/tvm_backend/repack.py): output rows grouped
in tiles of `tile` so one vector register holds a tile's accumulators and a tile's weights are
contiguous in memory. Dequantization happens inside the matmul, never as a separate pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from tvm import te, tirx
from tvm.s_tir import Schedule
from tvm.target import Target
from tvm.target.codegen import target_has_features

WeightKind = Literal["q0", "q4", "q4h", "q4_0", "q4_1", "q4_k", "q8_0", "q6_k", "q5_k"]
"""q0: dense float32 weights; q4: 4-bit groups with float32 scales; q4h: with float16 scales
(q4f16_1 keeps its scales in half precision: less memory traffic per decoded token).
llama.cpp's block formats, run as they are (engine/block_codes.py): q4_0 and q4_1: 4-bit codes
with an f16 scale and an f16 min per group of 32, value code * scale + min (q4_0's min is
-8 * scale); q4_k: the same with an f32 scale and min per group (d * sc_j and -dmin * m_j of
its super-blocks, exact only in f32); q8_0: int8 codes with an f16 scale per group of 32. The
K-quants stored as 8-bit codes (CODE8_KINDS): q6_k, codes -32..31 with an f32 scale (d * sub-block
scale) per group of 16; q5_k, codes 0..31 with an f32 scale and an f32 min per group of 32."""
GGUF_KINDS: tuple[WeightKind, ...] = ("q4_0", "q4_1", "q8_0")
"""Their scales and mins stay f16, as the file stores them: exact, and half the bytes per token."""
CODE8_KINDS: tuple[WeightKind, ...] = ("q8_0", "q6_k", "q5_k")
"""Kinds whose codes are stored one signed byte each (float: [n_tiles, k, tile]; int8:
int8_kernels_q8.py's layout)."""
CpuMatmul = Literal["float", "int8"]
"""How a CPU linear layer computes: float (dequantize the weights, FMA in float32) or int8
(quantize the activations, integer dot products: engine/tvm_backend/int8_kernels.py)."""

Q4_PER_WORD = 8
Q4_GROUP = 32
VNNI_LANES = 16
"""int32 lanes of a 512-bit register: the output rows one vpdpbusd computes."""
VNNI_CHUNKS = Q4_GROUP // 8
"""64-byte chunks of the VNNI layout per group and 16 output rows (8 k each, 4 per nibble)."""
KERNEL_ATTR = "tandem.kernel"
"""Names the group of a hand-written kernel; the compiler builds each group in an LLVM module
of its own."""


def as_float32(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """A loaded scalar or vector as float32 of as many lanes (a float16 cache's halves widened;
    no cast when it is float32 already)."""
    return stored_as(value, "float32")


def stored_as(value: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """A scalar or vector as a buffer of `dtype` holds it, lanes kept (no cast when it is one)."""
    lanes = value.ty.dtype.lanes
    wanted = dtype if lanes == 1 else f"{dtype}x{lanes}"
    return value if str(value.ty.dtype) == wanted else tirx.Cast(wanted, value)


def vector_lanes() -> int:
    """float32 lanes of the current target's vector registers (16 with AVX-512, 8 with AVX2)."""
    target = Target.current(allow_none=True)
    if target is None or target.kind.name != "llvm":
        return 8
    if target_has_features("avx512f", target):
        return 16
    return 8 if target_has_features("avx", target) else 4


def output_tile(n_out: int) -> int:
    """The widest tile, up to two vector registers (measured fastest for the decode GEMV on
    AVX-512), that divides the output dimension."""
    tile = 2 * vector_lanes()
    while n_out % tile:
        tile //= 2
    return tile


def prefill_row_tile(tile: int) -> int:
    """Prompt rows computed together, so each dequantized weight vector serves several tokens:
    8 fit the 32 AVX-512 registers beside a 32-wide tile; narrower tiles mean fewer registers."""
    return 8 if tile >= 32 else 4


def scale_dtype(kind: WeightKind) -> str:
    return "float16" if kind == "q4h" or kind in GGUF_KINDS else "float32"


def has_min(kind: WeightKind) -> bool:
    """Whether the kind stores a per-group min (offset) beside its scale (in the float layout)."""
    return kind in ("q4_0", "q4_1", "q4_k", "q5_k")


def weight_group(kind: WeightKind) -> int:
    """Codes per scale (and min) along the input axis: 16 for q6_k's sub-blocks, else 32."""
    return 16 if kind == "q6_k" else Q4_GROUP


INT8_ZERO_POINTS: dict[WeightKind, int] = {"q4": 7, "q4h": 7, "q4_0": 8}
"""4-bit kinds whose min is a whole number of scales (min = -zero_point * scale): the int8
kernels fold it into the integer dot and their VNNI layout stores no min."""


def int8_zero_point(kind: WeightKind) -> int | None:
    """The kind's integer zero point on the int8 path, or None when it needs its stored min."""
    return INT8_ZERO_POINTS.get(kind)


def q4_groups(k_in: int) -> int:
    """Groups of 32 along the input axis; MLC pads a ragged last group with zero codes."""
    return -(-k_in // Q4_GROUP)


@dataclass(frozen=True)
class LinearShape:
    kind: WeightKind
    n_out: int
    k_in: int
    tile: int
    """Output rows per tile of the weight layout (see output_tile)."""
    matmul: CpuMatmul = "float"
    """int8 only for 4-bit weights, with the VNNI layout (int8_kernels.py describes it)."""

    def weight_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Parameter name suffix -> (shape, dtype) in the tiled (or VNNI) layout."""
        n_tiles, tile = self.n_out // self.tile, self.tile
        if self.kind == "q0":
            return {"weight": ((n_tiles, self.k_in, tile), "float32")}
        groups = q4_groups(self.k_in)
        scales: tuple[tuple[int, ...], str] = ((n_tiles, groups, tile), scale_dtype(self.kind))
        if self.kind in CODE8_KINDS:
            scales = ((n_tiles, -(-self.k_in // weight_group(self.kind)), tile), scale_dtype(self.kind))
            codes: tuple[tuple[int, ...], str] = ((n_tiles, groups * Q4_GROUP, tile), "int8")
            if self.matmul == "int8":
                codes = ((n_tiles, self.k_in // 4, tile, 4), "int8")
            mins: dict[str, tuple[tuple[int, ...], str]] = {"q_min": scales} if has_min(self.kind) else {}
            return {"q_weight": codes, "q_scale": scales, **mins}
        if self.matmul == "int8":
            vnni = (n_tiles, groups, VNNI_CHUNKS, tile // VNNI_LANES, 4 * VNNI_LANES)
            mins = {"q_min": scales} if int8_zero_point(self.kind) is None else {}
            return {"q_weight": (vnni, "uint8"), "q_scale": scales, **mins}
        words = ((n_tiles, groups * Q4_GROUP // Q4_PER_WORD, tile), "uint32")
        if has_min(self.kind):
            return {"q_weight": words, "q_scale": scales, "q_min": scales}
        return {"q_weight": words, "q_scale": scales}


def q4_code(word: tirx.PrimExpr, k: tirx.PrimExpr) -> tirx.PrimExpr:
    """The 4-bit code (0..15, as float32) of element k (k % 8 picks the nibble, low nibble first)."""
    shift = tirx.Cast("uint32", (k % Q4_PER_WORD) * 4)
    nibble = (word >> shift) & tirx.const(15, "uint32")
    return nibble.astype("float32")


def q4_value(word: tirx.PrimExpr, k: tirx.PrimExpr) -> tirx.PrimExpr:
    """The signed value of element k in MLC's q4 (its code minus 7)."""
    return q4_code(word, k) - tirx.const(7.0, "float32")


def _padded_input(x: te.Tensor, rows, row_tile: int, k_padded: int):
    """x zero-padded to whole row tiles and whole quantization groups, so the scheduled loops
    need no predicate (a predicate on the symbolic row count defeats register tiling)."""
    k_in = x.shape[1]
    rows_padded = rows if row_tile == 1 else (rows + row_tile - 1) // row_tile * row_tile
    if row_tile == 1 and k_padded == k_in:
        return x, rows_padded
    last_row, last_col = rows - 1, k_in - 1

    def value(m, k):
        inside = tirx.all(m < rows, k < k_in)
        return tirx.if_then_else(inside, x[tirx.min(m, last_row), tirx.min(k, last_col)], 0.0)

    return te.compute((rows_padded, k_padded), value, name="x_padded"), rows_padded


def _unpadded(y_padded: te.Tensor, rows, rows_padded) -> te.Tensor:
    """y without the padding rows; y itself when nothing was padded (decode), so the kernel
    writes its output directly instead of through a serial copy."""
    if rows_padded is rows:
        return y_padded
    return te.compute((rows, y_padded.shape[1]), lambda m, n: y_padded[m, n], name="unpad")


def _dense_compute(shape: LinearShape, rows, row_tile: int) -> tirx.PrimFunc:
    k_in, n_out, tile = shape.k_in, shape.n_out, shape.tile
    x = te.placeholder((rows, k_in), "float32", name="x")
    xp, rows_padded = _padded_input(x, rows, row_tile, k_in)
    w = te.placeholder(shape.weight_shapes()["weight"][0], "float32", name="w")
    k = te.reduce_axis((0, k_in), name="k")
    y = te.compute(
        (rows_padded, n_out),
        lambda m, n: te.sum(xp[m, k] * w[n // tile, k, n % tile], axis=k),
        name="matmul",
    )
    return te.create_prim_func([x, w, _unpadded(y, rows, rows_padded)])


def _q4_compute(shape: LinearShape, rows, row_tile: int) -> tirx.PrimFunc:
    """y = sum over groups g of scale[g] * (sum_j x_j * code_j - 7 * sum_j x_j) for MLC's q4,
    scale[g] * sum_j x_j * code_j + min[g] * sum_j x_j for q4_0 / q4_1: the offset and the
    scale leave the inner loop, which is then one FMA per weight (after the nibble unpack)."""
    k_in, n_out, tile = shape.k_in, shape.n_out, shape.tile
    groups = q4_groups(k_in)
    specs = shape.weight_shapes()
    x = te.placeholder((rows, k_in), "float32", name="x")
    xp, rows_padded = _padded_input(x, rows, row_tile, groups * Q4_GROUP)
    q = te.placeholder(specs["q_weight"][0], "uint32", name="q_weight")
    s = te.placeholder(specs["q_scale"][0], scale_dtype(shape.kind), name="q_scale")
    low = te.placeholder(specs["q_min"][0], specs["q_min"][1], name="q_min") if has_min(shape.kind) else None

    j = te.reduce_axis((0, Q4_GROUP), name="j")
    x_sum = te.compute(
        (rows_padded, groups), lambda m, g: te.sum(xp[m, g * Q4_GROUP + j], axis=j), name="x_sum"
    )
    jj = te.reduce_axis((0, Q4_GROUP), name="jj")

    def code(n, k):
        word = q[n // tile, k // Q4_PER_WORD, n % tile]
        shift = tirx.Cast("uint32", (k % Q4_PER_WORD) * 4)
        return ((word >> shift) & tirx.const(15, "uint32")).astype("float32")

    partial = te.compute(
        (rows_padded, n_out, groups),
        lambda m, n, g: te.sum(xp[m, g * Q4_GROUP + jj] * code(n, g * Q4_GROUP + jj), axis=jj),
        name="group_dot",
    )
    g = te.reduce_axis((0, groups), name="g")
    seven = tirx.const(7.0, "float32")

    def group_term(m, n):
        scale = s[n // tile, g, n % tile].astype("float32")
        if low is None:
            return scale * (partial[m, n, g] - seven * x_sum[m, g])
        return scale * partial[m, n, g] + low[n // tile, g, n % tile].astype("float32") * x_sum[m, g]

    y = te.compute((rows_padded, n_out), lambda m, n: te.sum(group_term(m, n), axis=g), name="matmul")
    weights = [q, s] if low is None else [q, s, low]
    return te.create_prim_func([x, *weights, _unpadded(y, rows, rows_padded)])


def _q8_compute(shape: LinearShape, rows, row_tile: int) -> tirx.PrimFunc:
    """y = sum over groups g of scale[g] * sum_j x_j * code_j (+ min[g] * sum_j x_j for q5_k),
    int8 codes widened in registers; groups of weight_group(kind) codes."""
    k_in, n_out, tile = shape.k_in, shape.n_out, shape.tile
    size = weight_group(shape.kind)
    groups = -(-k_in // size)
    specs = shape.weight_shapes()
    x = te.placeholder((rows, k_in), "float32", name="x")
    xp, rows_padded = _padded_input(x, rows, row_tile, q4_groups(k_in) * Q4_GROUP)
    q = te.placeholder(specs["q_weight"][0], "int8", name="q_weight")
    s = te.placeholder(specs["q_scale"][0], scale_dtype(shape.kind), name="q_scale")
    low = te.placeholder(specs["q_min"][0], specs["q_min"][1], name="q_min") if has_min(shape.kind) else None
    jj = te.reduce_axis((0, size), name="jj")
    partial = te.compute(
        (rows_padded, n_out, groups),
        lambda m, n, g: te.sum(
            xp[m, g * size + jj] * q[n // tile, g * size + jj, n % tile].astype("float32"), axis=jj
        ),
        name="group_dot",
    )
    weights = [q, s]
    if low is not None:
        j = te.reduce_axis((0, size), name="j")
        x_sum = te.compute((rows_padded, groups), lambda m, g: te.sum(xp[m, g * size + j], axis=j), name="x_sum")
        weights.append(low)
    g = te.reduce_axis((0, groups), name="g")

    def group_term(m, n):
        term = s[n // tile, g, n % tile].astype("float32") * partial[m, n, g]
        if low is None:
            return term
        return term + low[n // tile, g, n % tile].astype("float32") * x_sum[m, g]

    y = te.compute((rows_padded, n_out), lambda m, n: te.sum(group_term(m, n), axis=g), name="matmul")
    return te.create_prim_func([x, *weights, _unpadded(y, rows, rows_padded)])


def _schedule(func: tirx.PrimFunc, shape: LinearShape, row_tile: int) -> tirx.PrimFunc:
    """Parallel over output tiles; per tile, accumulators for `row_tile` rows x `tile` outputs
    stay in registers while the reduction streams the tile's contiguous weights."""
    sch = Schedule(func)
    block = sch.get_sblock("matmul")
    m, n, k = sch.get_loops(block)
    n_tile, lanes = sch.split(n, [None, shape.tile])
    m_outer, m_inner = sch.split(m, [None, row_tile])
    if shape.kind != "q0":
        k_outer, k_inner = k, None  # k runs over groups; group_dot does the inner 32
    else:
        k_unroll = Q4_PER_WORD if shape.k_in % Q4_PER_WORD == 0 else 1
        k_outer, k_inner = sch.split(k, [None, k_unroll])
    sch.reorder(n_tile, m_outer, k_outer, *([k_inner] if k_inner else []), m_inner, lanes)
    sch.parallel(n_tile)
    accumulator = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(accumulator, m_outer)
    if shape.kind != "q0":
        _schedule_group_dot(sch, k_outer, row_tile)
    else:
        sch.unroll(k_inner)
    sch.vectorize(lanes)
    sch.unroll(m_inner)
    sch.decompose_reduction(block, k_outer)
    sch.vectorize(sch.get_loops(accumulator)[-1])
    if row_tile > 1:
        _schedule_unpad(sch, shape.tile)
    # Opaque: relax must neither fuse neighbours into this kernel nor re-schedule it.
    func = sch.mod["main"].without_attr("global_symbol")
    return func.with_attrs({"tirx.is_scheduled": True, "op_pattern": 8, KERNEL_ATTR: "linear"})


def _schedule_unpad(sch: Schedule, tile: int) -> None:
    unpad = sch.get_sblock("unpad")
    rows, columns = sch.get_loops(unpad)
    sch.parallel(rows)
    sch.vectorize(sch.split(columns, [None, tile])[1])


def _schedule_group_dot(sch: Schedule, group_loop, row_tile: int) -> None:
    """One group's dot products computed in registers right where the group is consumed."""
    group_dot = sch.get_sblock("group_dot")
    sch.compute_at(group_dot, group_loop)
    sch.set_scope(group_dot, 0, "local")
    loops = sch.get_loops(group_dot)
    # Under the group loop: (rows if row_tile > 1), lanes, j; a row tile of 1 leaves no row loop.
    inner = loops[len(loops) - (3 if row_tile > 1 else 2) :]
    j, lanes = inner[-1], inner[-2]
    sch.reorder(j, *inner[:-1])
    j_outer, j_inner = sch.split(j, [None, Q4_PER_WORD])
    sch.vectorize(lanes)
    sch.unroll(j_inner)
    if row_tile > 1:
        sch.unroll(inner[0])
    sch.decompose_reduction(group_dot, j_outer)


@lru_cache(maxsize=None)
def linear_kernel(shape: LinearShape, phase: Literal["decode", "prefill"]) -> tirx.PrimFunc:
    """y[rows, n_out] = x[rows, k_in] @ W.T, W given in the tiled layout of `shape`.

    decode: one row; prefill: a symbolic number of rows, zero-padded to whole row tiles."""
    compute = _dense_compute if shape.kind == "q0" else _q8_compute if shape.kind in CODE8_KINDS else _q4_compute
    if phase == "decode":
        return _schedule(compute(shape, 1, 1), shape, 1)
    rows = tirx.Var("rows", "int64")
    row_tile = prefill_row_tile(shape.tile)
    return _schedule(compute(shape, rows, row_tile), shape, row_tile)
