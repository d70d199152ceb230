"""The many-row int8 kernels: y[rows, n_out] = x[rows, k_in] @ W.T for a symbolic number of rows
(a batched decode step, one row per sequence, and chunked prefill), for 4-bit weights in the
same variants, weight layout and arithmetic as int8_kernels.py, and for 8-bit codes (q8_0, q6_k,
q5_k) as int8_kernels_q8.py (their docstrings have them).

What differs is the loop order, chosen so that a step over R rows costs little more than the
one-row kernel's weight stream. int8_kernels.py's many-row form keeps, per tile of 32 outputs,
the integer dots and float sums of every output of a block of rows live at once: 2 x rows x
(tile / lanes) registers, twice what AVX2's sixteen hold, so both spill to the stack on every
dot product. Here one task walks a tile one register of outputs (`lanes` rows of W) at a time:
for each block of rows, for each register of the tile, for each group, each row's integer dot
and float sum take one register each, the weight chunk is unpacked once and meets every row of
the block. A tile's codes (k_in * tile / 2 bytes: 9 KiB at k_in = 576) stay in L1 between the
passes; the first pass over a tile prefetches the weight stream ahead as the decode kernels do,
so reading W from memory overlaps the arithmetic."""

from __future__ import annotations

from functools import lru_cache

from tvm import tirx
from tvm.script import tirx as T

from engine.tvm_backend.int8_kernels import (
    CACHE_LINE,
    ISAS,
    KERNEL_ATTR,
    PREFETCH_AHEAD_BYTES,
    Int8Isa,
    IsaSpec,
    _dot_finish,
    _dot_start,
    _dot_step,
    _lanes,
    _nibbles,
    _prefetch,
    _quad,
    _start_sum,
    _with_min,
    isa_in_scope,
    quantize_row_macro,
)
from engine.tvm_backend import int8_kernels_q8 as q8
from engine.tvm_backend.int8_decode import DecodeFusion, keep_params, write_prologue
from engine.tvm_backend.kernels import (
    CODE8_KINDS,
    Q4_GROUP,
    VNNI_CHUNKS,
    LinearShape,
    as_float32,
    has_min,
    int8_zero_point,
    q4_groups,
    scale_dtype,
    stored_as,
    weight_group,
)

ROW_BLOCK: dict[int, int] = {8: 4, 16: 8, 4: 4}
"""Rows sharing each unpacked weight register, by int32 lanes per register. AVX2 (8 lanes, 16
registers): 4 rows' dots and sums (8 registers) beside the weight, its nibble mask and the
broadcast activations; AVX-512 (16 lanes, 32 registers): 8 rows. ARM (4 lanes, 32 registers): 4."""


def row_block(spec: IsaSpec) -> int:
    """Rows computed together for the variant `spec` (ROW_BLOCK)."""
    return ROW_BLOCK[spec.lanes]


def rows_linear_kernel(
    shape: LinearShape, isa: Int8Isa | None = None, fusion: DecodeFusion | None = None
) -> tirx.PrimFunc:
    """The many-row kernel for `shape` (a 4-bit kind in the VNNI layout, or an 8-bit-code kind in
    int8_kernels_q8's) and `isa` (default: the scope's, see int8_kernels.int8_isa_scope), marked
    opaque and already scheduled. With `fusion` (int8_decode.DecodeFusion) each row gets the
    fused decode kernels' prologue before its quantization and the residual after: a batched
    decode step then runs the one-row step's four kernels per layer. Parameters: x, norm
    (rms_norm only), the layer's weights, residual (when fused), y."""
    return _rows_linear_kernel(shape, isa_in_scope(isa), fusion or DecodeFusion())


@lru_cache(maxsize=None)
def _rows_linear_kernel(shape: LinearShape, isa: Int8Isa, fusion: DecodeFusion) -> tirx.PrimFunc:
    spec = ISAS[isa]
    build = _code8_kernel if shape.kind in CODE8_KINDS else _kernel
    func = build(shape, tirx.Var("rows", "int64"), row_block(spec), spec, fusion)
    # Opaque: relax must neither fuse neighbours into this kernel nor re-schedule it.
    return func.with_attrs({"tirx.is_scheduled": True, "op_pattern": 8, KERNEL_ATTR: "linear_int8"})


def _kernel(shape: LinearShape, rows, block: int, spec: IsaSpec, fusion: DecodeFusion) -> tirx.PrimFunc:
    k_in, n_out, tile = shape.k_in, shape.n_out, shape.tile
    groups = q4_groups(k_in)
    lanes = spec.lanes
    store = _store(fusion.residual, lanes)
    sub = tile // lanes  # registers per tile row
    chunk_bytes = 4 * tile
    acc_dtype, acc_lanes = ("int16", 2 * lanes) if spec.dot == "maddubs" else ("int32", lanes)
    n_tiles = n_out // tile
    blocks = (rows + block - 1) // block
    weight_shape = shape.weight_shapes()["q_weight"][0]
    scales = scale_dtype(shape.kind)
    zero_point = int8_zero_point(shape.kind)
    stored_min = zero_point is None
    group_bytes = VNNI_CHUNKS * chunk_bytes  # one tile's codes for one group
    scales_per_line = CACHE_LINE // (2 if scales == "float16" else 4)
    scale_lines = -(-tile // scales_per_line)
    ahead = PREFETCH_AHEAD_BYTES // group_bytes

    quantize_rows = _quantize_rows(fusion, quantize_row_macro(k_in, zero_point, scale_scope="global"), rows, k_in)

    @T.macro
    def body(x, norm, w, s, low, residual, y):
        w_flat = T.decl_buffer((n_tiles * groups * group_bytes,), "uint8", data=w.data)
        s_flat = T.decl_buffer((n_tiles * groups * tile,), scales, data=s.data)
        low_flat = T.decl_buffer((n_tiles * groups * tile,), scales, data=low.data)
        xq = T.alloc_buffer((rows, groups * Q4_GROUP // 4), "int32")  # 4 int8 per word
        xq8 = T.decl_buffer((rows, groups * Q4_GROUP), "int8", data=xq.data)
        xs = T.alloc_buffer((rows, groups), "float32")
        zero_point_sum = T.alloc_buffer((rows, groups), "int32")  # -zp * sum(xq)
        x_sum = T.alloc_buffer((rows, groups), "float32")  # xs * sum(xq), for a stored min
        quantize_rows(x, norm, xq8, xs, zero_point_sum, x_sum)
        for t in T.parallel(n_tiles):
            # Global scope and under 1 KiB: stack arrays LLVM keeps in registers ("local"
            # buffers become heap workspaces, every access a load or a store).
            acc = T.alloc_buffer((block, lanes), "float32")
            dot = T.alloc_buffer((block, acc_lanes), acc_dtype)
            row = T.alloc_buffer((block,), "int64")
            for b in range(blocks):
                # Rows past the end repeat the last one (computed, never stored).
                for i in T.unroll(block):
                    row[i] = T.min(b * block + i, rows - 1)
                for u in range(sub):
                    for i in T.unroll(block):
                        for n in T.vectorized(lanes):
                            acc[i, n] = T.float32(0)
                    for g in range(groups):
                        if b == 0 and u == 0:  # the tile's first pass reads it from memory
                            for line in T.unroll(group_bytes // CACHE_LINE):
                                T.evaluate(_prefetch(w_flat, (t * groups + g + ahead) * group_bytes + line * CACHE_LINE))
                            for line in T.unroll(scale_lines):
                                T.evaluate(_prefetch(s_flat, (t * groups + g + ahead) * tile + line * scales_per_line))
                            if stored_min:
                                for line in T.unroll(scale_lines):
                                    T.evaluate(_prefetch(low_flat, (t * groups + g + ahead) * tile + line * scales_per_line))
                        for i in T.unroll(block):
                            dot[i, T.ramp(0, 1, acc_lanes)] = _dot_start(spec, _start_sum(zero_point_sum, row[i], g, stored_min))
                        for c in T.unroll(VNNI_CHUNKS):
                            # k = 8c..8c+3 in the low nibbles (xq word 2c), 8c+4..8c+7 in the high ones
                            for i in T.unroll(block):
                                dot[i, T.ramp(0, 1, acc_lanes)] = _dot_step(
                                    spec,
                                    _lanes(dot, i, 0, lanes=acc_lanes),
                                    _nibbles(w_flat, (t * groups + g) * group_bytes + c * chunk_bytes + u * 4 * lanes, lanes, False),
                                    _quad(xq, row[i], g * 8 + 2 * c, lanes),
                                )
                            for i in T.unroll(block):
                                dot[i, T.ramp(0, 1, acc_lanes)] = _dot_step(
                                    spec,
                                    _lanes(dot, i, 0, lanes=acc_lanes),
                                    _nibbles(w_flat, (t * groups + g) * group_bytes + c * chunk_bytes + u * 4 * lanes, lanes, True),
                                    _quad(xq, row[i], g * 8 + 2 * c + 1, lanes),
                                )
                        for i in T.unroll(block):
                            # float(dot) * weight scale * activation scale (+ weight min * xs * sum(xq))
                            acc[i, T.ramp(0, 1, lanes)] = _with_min(
                                stored_min,
                                _lanes(acc, i, 0, lanes=lanes)
                                + T.Cast(
                                    f"float32x{lanes}",
                                    _dot_finish(spec, _lanes(dot, i, 0, lanes=acc_lanes), _start_sum(zero_point_sum, row[i], g, stored_min)),
                                )
                                * (T.Cast(f"float32x{lanes}", _lanes(s, t, g, u * lanes, lanes=lanes)) * xs[row[i], g]),
                                _lanes(low, t, g, u * lanes, lanes=lanes),
                                x_sum[row[i], g],
                                lanes,
                            )
                    for i in T.unroll(block):
                        if b * block + i < rows:
                            store(acc, residual, y, b * block + i, i, t * tile + u * lanes)


    @T.prim_func(private=True)
    def kernel(
        x: T.Buffer((rows, fusion.input_width(k_in)), fusion.input_dtype),
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

    return keep_params(kernel, _kept(fusion, stored_min))


def _quantize_rows(fusion: DecodeFusion, quantize_row, rows, k_in: int):
    """A macro (x, norm, xq8, xs, sums, x_sum) quantizing every row of x with `quantize_row`,
    one row per parallel task, each first made what the linear layer takes by the fusion's
    prologue (int8_decode.write_prologue) where it has one."""
    prologue = write_prologue(fusion, k_in)

    @T.macro
    def quantize_rows(x, norm, xq8, xs, sums, x_sum):
        if prologue is None:
            for m in T.parallel(rows):
                quantize_row(x, xq8, xs, sums, x_sum, m)
        else:
            xf = T.alloc_buffer((rows, k_in), "float32")
            for m in T.parallel(rows):
                prologue(x, norm, xf, m)
                quantize_row(xf, xq8, xs, sums, x_sum, m)

    return quantize_rows


def _store(add_residual: bool, lanes: int):
    """A macro (acc, residual, y, row, i, column) storing one register of outputs of `row` (the
    block's i-th), plus the residual's when fused (the unfused graph's add, same sum)."""

    @T.macro
    def store(acc, residual, y, row, i, column):
        if add_residual:
            y[row, T.ramp(column, 1, lanes)] = stored_as(_lanes(acc, i, 0, lanes=lanes) + _lanes(residual, row, column, lanes=lanes), y.dtype)
        else:
            y[row, T.ramp(column, 1, lanes)] = stored_as(_lanes(acc, i, 0, lanes=lanes), y.dtype)

    return store


def _kept(fusion: DecodeFusion, with_min: bool) -> list[bool]:
    """Which of (x, norm, w, s, low, residual, y) a kernel's variant takes."""
    return [True, fusion.prologue == "rms_norm", True, True, with_min, fusion.residual, True]


def _code8_kernel(shape: LinearShape, rows, block: int, spec: IsaSpec, fusion: DecodeFusion) -> tirx.PrimFunc:
    """The same loop order over int8_kernels_q8's layout: per weight group (16 or 32 k), group / 4
    chunks of one code byte per output and k; activations quantized per 32 k."""
    k_in, n_out, tile, kind = shape.k_in, shape.n_out, shape.tile, shape.kind
    group = weight_group(kind)
    per_activation = q8.ACTIVATION_GROUP // group  # weight groups per activation group (1 or 2)
    a_groups, w_groups = k_in // q8.ACTIVATION_GROUP, k_in // group
    chunks = group // 4
    lanes = spec.lanes
    store = _store(fusion.residual, lanes)
    sub = tile // lanes
    chunk_bytes = 4 * tile
    group_bytes = chunks * chunk_bytes
    n_tiles = n_out // tile
    blocks = (rows + block - 1) // block
    specs = shape.weight_shapes()
    weight_shape = specs["q_weight"][0]
    scales = scale_dtype(kind)
    with_min = has_min(kind)
    scales_per_line = CACHE_LINE // (2 if scales == "float16" else 4)
    ahead = max(1, PREFETCH_AHEAD_BYTES // group_bytes)
    min_shape = specs["q_min"][0] if with_min else (1, 1, tile)

    @T.macro
    def quantize_row(source, xq8, xs, code_sum, x_sum, m):
        scale = T.alloc_buffer((2,), "float32")  # max |x|, then 127 / max |x|
        for a in range(a_groups):
            scale[0] = T.float32(0)
            for h in range(2):
                scale[0] = T.max(
                    scale[0],
                    T.call_llvm_pure_intrin(
                        "float32", "llvm.vector.reduce.fmax", T.fabs(as_float32(_lanes(source, m, a * q8.ACTIVATION_GROUP + h * 16, lanes=16)))
                    ),
                )
            xs[m, a] = scale[0] / T.float32(127)
            scale[1] = T.if_then_else(scale[0] > T.float32(0), T.float32(127) / scale[0], T.float32(0))
            for h in range(2):
                xq8[m, T.ramp(a * q8.ACTIVATION_GROUP + h * 16, 1, 16)] = T.Cast(
                    "int8x16", T.nearbyint(as_float32(_lanes(source, m, a * q8.ACTIVATION_GROUP + h * 16, lanes=16)) * scale[1])
                )
            for p in range(per_activation):
                code_sum[m, a * per_activation + p] = T.int32(0)
                for h in range(2 // per_activation):
                    code_sum[m, a * per_activation + p] = code_sum[m, a * per_activation + p] + T.call_llvm_pure_intrin(
                        "int32",
                        "llvm.vector.reduce.add",
                        T.Cast("int32x16", _lanes(xq8, m, a * q8.ACTIVATION_GROUP + (p * 2 // per_activation + h) * 16, lanes=16)),
                    )
                x_sum[m, a * per_activation + p] = T.Cast("float32", code_sum[m, a * per_activation + p]) * xs[m, a]

    quantize_rows = _quantize_rows(fusion, quantize_row, rows, k_in)

    @T.macro
    def body(x, norm, w, s, low, residual, y):
        w_flat = T.decl_buffer((n_tiles * w_groups * group_bytes,), "int8", data=w.data)
        s_flat = T.decl_buffer((n_tiles * w_groups * tile,), scales, data=s.data)
        xq = T.alloc_buffer((rows, k_in // 4), "int32")  # 4 int8 per word
        xq8 = T.decl_buffer((rows, k_in), "int8", data=xq.data)
        xs = T.alloc_buffer((rows, a_groups), "float32")
        code_sum = T.alloc_buffer((rows, w_groups), "int32")  # sum(xq) per weight group
        x_sum = T.alloc_buffer((rows, w_groups), "float32")  # xs * sum(xq) per weight group
        quantize_rows(x, norm, xq8, xs, code_sum, x_sum)
        for t in T.parallel(n_tiles):
            acc = T.alloc_buffer((block, lanes), "float32")
            dot = T.alloc_buffer((block, lanes), "int32")
            row = T.alloc_buffer((block,), "int64")
            for b in range(blocks):
                for i in T.unroll(block):
                    row[i] = T.min(b * block + i, rows - 1)
                for u in range(sub):
                    for i in T.unroll(block):
                        for n in T.vectorized(lanes):
                            acc[i, n] = T.float32(0)
                    for g in range(w_groups):
                        if b == 0 and u == 0:
                            for line in T.unroll(group_bytes // CACHE_LINE):
                                T.evaluate(_prefetch(w_flat, (t * w_groups + g + ahead) * group_bytes + line * CACHE_LINE))
                            for line in T.unroll(-(-tile // scales_per_line)):
                                T.evaluate(_prefetch(s_flat, (t * w_groups + g + ahead) * tile + line * scales_per_line))
                        for i in T.unroll(block):
                            dot[i, T.ramp(0, 1, lanes)] = q8._dot_start(spec, code_sum[row[i], g])
                        for c in T.unroll(chunks):
                            for i in T.unroll(block):
                                dot[i, T.ramp(0, 1, lanes)] = q8._dot_step(
                                    spec,
                                    _lanes(dot, i, 0, lanes=lanes),
                                    _lanes(w_flat, (t * w_groups + g) * group_bytes + c * chunk_bytes + u * 4 * lanes, lanes=4 * lanes),
                                    q8._quad(xq, row[i], g * chunks + c, lanes),
                                )
                        for i in T.unroll(block):
                            acc[i, T.ramp(0, 1, lanes)] = q8._with_min(
                                with_min,
                                _lanes(acc, i, 0, lanes=lanes)
                                + T.Cast(f"float32x{lanes}", _lanes(dot, i, 0, lanes=lanes))
                                * (
                                    T.Cast(f"float32x{lanes}", _lanes(s, t, g, u * lanes, lanes=lanes))
                                    * xs[row[i], g // per_activation]
                                ),
                                low,
                                t,
                                g,
                                u * lanes,
                                lanes,
                                x_sum[row[i], g],
                            )
                    for i in T.unroll(block):
                        if b * block + i < rows:
                            store(acc, residual, y, b * block + i, i, t * tile + u * lanes)


    @T.prim_func(private=True)
    def kernel(
        x: T.Buffer((rows, fusion.input_width(k_in)), fusion.input_dtype),
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

    return keep_params(kernel, _kept(fusion, with_min))
