"""Parallel, vectorised CPU kernels for the paged KV cache, in place of apache-tvm's serial or
libm-bound ones (same signatures, same results): the ragged prefill attention (the prompt chunk
attending to itself), the decode attention (one query per sequence attending to its pages) and
the q/k/v split with RoPE. Each takes a float32 or a float16 cache (`dtype`: q, k, v, the pages
and the output in it; the log-sum-exp is float32 either way) and computes in float32.

The KV caches Tandem builds apply RoPE before attention (RopeMode.NORMAL), so the kernel never
sees rotary_mode 1 and leaves q and k as they come. Scores are in log2 units and `lse` is
max + log2(sum), as the cache's state-merging kernel expects."""

from __future__ import annotations

import math

from tvm import tirx
from tvm.script import tirx as T

from engine.tvm_backend.kernels import KERNEL_ATTR, as_float32, stored_as

RAGGED_PREFILL_NAME = "batch_prefill_ragged_kv"
DECODE_NAME = "batch_decode_paged_kv_cpu"
"""The names of the functions the TIR paged KV cache calls for them (apache-tvm 0.27)."""
LANES = 16
LOG2_E = math.log2(math.e)


def exp2(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """2**x inline (relative error about 1e-7; x clamped to [-126, 126]): LLVM lowers exp2 to
    a libm call, which spills every vector register of the caller and is never vectorised."""
    x = tirx.min(tirx.max(x, tirx.const(-126.0, "float32")), tirx.const(126.0, "float32"))
    whole = tirx.floor(x)
    fraction = (x - whole) * tirx.const(math.log(2), "float32")
    poly = tirx.const(1 / math.factorial(7), "float32")
    for power in range(6, -1, -1):  # Taylor series of e**y, y in [0, ln 2)
        poly = poly * fraction + tirx.const(1 / math.factorial(power), "float32")
    exponent = (tirx.Cast("int32", whole) + 127) << 23
    return poly * tirx.reinterpret("float32", exponent)


def supports(head_dim: int) -> bool:
    """The kernel works in 16-lane vectors along the head dimension."""
    return head_dim % LANES == 0


def _cached_keys(page_indptr: tirx.Buffer, last_page_len: tirx.Buffer, b, page_size: int) -> tirx.PrimExpr:
    """Keys sequence b holds in the cache: its full pages and its last one's filled slots."""
    pages = page_indptr[b + 1] - page_indptr[b]
    return tirx.if_then_else(pages > 0, (pages - 1) * page_size + last_page_len[b], 0)


def _causal_keys(kv_len, q_len, row) -> tirx.PrimExpr:
    """Keys a chunk's query `row` sees under a causal mask, the chunk being the last q_len of
    kv_len keys: those up to its own position (kv_len - q_len + row), none below zero."""
    return tirx.max(tirx.min(kv_len, kv_len - q_len + row + 1), 0)


def ragged_prefill_attention(h_kv: int, h_q: int, head_dim: int, dtype: str = "float32"):
    """One task per block of QUERY_BLOCK query rows of a sequence and head, in parallel (one
    fork-join per sequence): _query_block_softmax over the chunk's own keys, KEY_TILE at a time,
    each row seeing those up to its own position when `causal`. When a task took two rows, each
    dot product ended in a horizontal sum and the softmax rescaled at every larger score: a
    256-token SmolLM2 prompt prefilled at 1,490-1,620 tok/s, against 1,790-2,120 now."""
    rows = QUERY_BLOCK
    attend_block = _query_block_softmax(h_q // h_kv, head_dim, KEY_TILE, dtype, ragged=True)

    # fmt: off
    @T.prim_func(s_tir=True)
    def ragged_prefill(
        var_q: T.handle, var_q_indptr: T.handle, var_k: T.handle, var_v: T.handle,
        var_kv_indptr: T.handle, var_q_rope_position: T.handle, var_k_rope_pos_offset: T.handle,
        var_output: T.handle, var_lse: T.handle, causal: T.int32, rotary_mode: T.int32,
        rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        batch_size = T.int32()
        qo_len = T.int32()
        kv_len = T.int32()
        q_indptr_offset = T.int32()
        kv_indptr_offset = T.int32()
        q_rope_offset = T.int32()
        k_rope_offset = T.int32()
        q = T.match_buffer(var_q, (qo_len, h_q, head_dim), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_indptr_offset)
        k = T.match_buffer(var_k, (kv_len, h_kv, head_dim), dtype)
        v = T.match_buffer(var_v, (kv_len, h_kv, head_dim), dtype)
        kv_indptr = T.match_buffer(var_kv_indptr, (batch_size + 1,), "int32", elem_offset=kv_indptr_offset)
        q_rope_position = T.match_buffer(var_q_rope_position, (qo_len,), "int32", elem_offset=q_rope_offset)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_rope_offset)
        output = T.match_buffer(var_output, (qo_len, h_q, head_dim), dtype)
        lse = T.match_buffer(var_lse, (qo_len, h_q), "float32")

        for b in T.serial(batch_size):
            for task in T.parallel((q_indptr[b + 1] - q_indptr[b] + rows - 1) // rows * h_q):
                with T.sblock("attend"):
                    # The block's first row in the chunk, its rows, the sequence's keys.
                    where = T.sblock_alloc_buffer((3,), "int32")
                    visible = T.sblock_alloc_buffer((rows,), "int32")
                    where[0] = task // h_q * rows
                    where[1] = T.min(rows, q_indptr[b + 1] - q_indptr[b] - where[0])
                    where[2] = kv_indptr[b + 1] - kv_indptr[b]
                    for r in T.serial(rows):
                        visible[r] = where[2]
                        if causal > 0:
                            visible[r] = _causal_keys(where[2], q_indptr[b + 1] - q_indptr[b], where[0] + T.min(r, where[1] - 1))
                    attend_block(q, k, v, kv_indptr, kv_indptr, output, lse, sm_scale, b, q_indptr[b] + where[0], where[1], task % h_q,
                                 visible, kv_indptr[b], kv_indptr[b + 1] - 1)
    # fmt: on
    return ragged_prefill.with_attrs({"tirx.is_scheduled": True, KERNEL_ATTR: "attention"})



def _online_softmax(group: int, head_dim: int, page_size: int, heads: int = 1):
    """What both paged kernels run for one query row and `heads` consecutive query heads of one
    key-value head: an online softmax over the first `n_keys` cached keys of sequence `b`, a
    page at a time, writing each head's output and log-sum-exp. Within a page the dot products
    are independent of each other (the core overlaps them), and the softmax rescales once per
    page with one vector of exp2 for its keys, where a key at a time chained every dot product,
    exp2 and rescale behind the last one: a SmolLM2 layer's decode attention at 320 tokens, on one
    thread, took 49 us that way and 34 us this way. The heads of a group read each key and value
    once for all of them (see decode_heads)."""
    lanes = LANES
    blocks = head_dim // lanes

    # fmt: off
    @T.macro
    def attend(q, pages, page_values, page_indptr, output, lse, sm_scale, b, row, first_head, n_keys):
        kv = T.meta_var(first_head // group)
        acc = T.sblock_alloc_buffer((heads, head_dim), "float32")
        query = T.sblock_alloc_buffer((heads, head_dim), "float32")  # q in log2 units: scores need no scaling
        partial = T.sblock_alloc_buffer((heads, lanes), "float32")
        weight = T.sblock_alloc_buffer((heads, page_size), "float32")
        state = T.sblock_alloc_buffer((heads, 3), "float32")  # running max, denominator, the page's max
        for h in T.unroll(heads):
            for i in T.vectorized(head_dim):
                acc[h, i] = T.float32(0)
                query[h, i] = as_float32(q[row, first_head + h, i]) * sm_scale * T.float32(LOG2_E)
            state[h, 0] = T.float32(-5e4)
            state[h, 1] = T.float32(0)
        for page in T.serial((n_keys + page_size - 1) // page_size):
            page_id = T.meta_var(page_values[page_indptr[b] + page])
            count = T.meta_var(T.min(page_size, n_keys - page * page_size))
            for key in T.serial(count):
                for h in T.unroll(heads):
                    for lane in T.vectorized(lanes):
                        partial[h, lane] = query[h, lane] * as_float32(pages[page_id, 0, kv, key, lane])
                for block in T.unroll(1, blocks):
                    for h in T.unroll(heads):
                        for lane in T.vectorized(lanes):
                            partial[h, lane] = partial[h, lane] + query[h, block * lanes + lane] * as_float32(pages[page_id, 0, kv, key, block * lanes + lane])
                for h in T.unroll(heads):
                    for lane in T.vectorized(8):
                        partial[h, lane] = partial[h, lane] + partial[h, lane + 8]
                    for lane in T.vectorized(4):
                        partial[h, lane] = partial[h, lane] + partial[h, lane + 4]
                    for lane in T.vectorized(2):
                        partial[h, lane] = partial[h, lane] + partial[h, lane + 2]
                    weight[h, key] = partial[h, 0] + partial[h, 1]
            for h in T.unroll(heads):
                state[h, 2] = state[h, 0]
                for key in T.serial(count):
                    state[h, 2] = T.max(state[h, 2], weight[h, key])
                if state[h, 2] > state[h, 0]:
                    acc_scale = T.meta_var(exp2(state[h, 0] - state[h, 2]))
                    for i in T.vectorized(head_dim):
                        acc[h, i] = acc[h, i] * acc_scale
                    state[h, 1] = state[h, 1] * acc_scale
                    state[h, 0] = state[h, 2]
                for key in T.vectorized(page_size):
                    weight[h, key] = T.if_then_else(key < count, exp2(weight[h, key] - state[h, 0]), T.float32(0))
            for key in T.serial(count):
                for h in T.unroll(heads):
                    state[h, 1] = state[h, 1] + weight[h, key]
                    for i in T.vectorized(head_dim):
                        acc[h, i] = acc[h, i] + weight[h, key] * as_float32(pages[page_id, 1, kv, key, i])
        for h in T.unroll(heads):
            for i in T.vectorized(head_dim):
                output[row, first_head + h, i] = stored_as(T.if_then_else(state[h, 1] > T.float32(0), acc[h, i] / state[h, 1], T.float32(0)), output.dtype)
            lse[row, first_head + h] = T.if_then_else(state[h, 1] > T.float32(0), state[h, 0] + T.log2(state[h, 1]), T.float32(-5e4))
    # fmt: on
    return attend


MAX_SHARED_HEADS = 4
"""Query heads one decode task carries at most: each holds its query and accumulator in registers
(2 x head_dim / 16 of AVX-512's 32 at head_dim 64)."""


def decode_heads(group: int) -> int:
    """Query heads of a group one decode task attends together: the largest divisor of the group
    up to MAX_SHARED_HEADS. Together they read the group's keys and values once instead of once
    each (SmolLM2's 3 heads a group read a third of the cache they did)."""
    return max(h for h in range(1, min(group, MAX_SHARED_HEADS) + 1) if group % h == 0)


def paged_decode_attention(h_kv: int, h_q: int, head_dim: int, page_size: int = 16, dtype: str = "float32"):
    """Tasks in parallel (a batched step is one fork-join, not one per sequence), each an online
    softmax over a sequence's cached keys, page by page, vectorised along the head dimension (a
    multiple of 16: see supports). The serial kernel it replaces took about a quarter of a decode
    step at a few hundred tokens. With at least decode_heads(group) sequences a task takes that
    many heads of a group, which read the keys and values once; with fewer, one head each, so
    that a lone sequence still has a task for every core (SmolLM2's 3 groups on 2 cores left
    one idle half the time, a step at 2,000 tokens took 12.3 ms instead of 9.5)."""
    heads = decode_heads(h_q // h_kv)
    tasks_per_row = h_q // heads
    attend_each = _online_softmax(h_q // h_kv, head_dim, page_size)
    attend_shared = _online_softmax(h_q // h_kv, head_dim, page_size, heads)

    # fmt: off
    @T.prim_func(s_tir=True)
    def paged_decode(
        var_q: T.handle, var_pages: T.handle, var_page_indptr: T.handle, var_page_values: T.handle,
        var_length_info: T.handle, var_k_rope_pos_offset: T.handle, var_q_rope_position: T.handle,
        var_output: T.handle, var_lse: T.handle, rotary_mode: T.int32, rope_scale: T.float32,
        rope_theta: T.float32, sm_scale: T.float32,
    ):
        batch_size = T.int32()
        nnz_pages = T.int32()
        max_num_pages = T.int32()
        page_indptr_offset = T.int32()
        page_values_offset = T.int32()
        k_rope_offset = T.int32()
        q_rope_offset = T.int32()
        length_info_offset = T.int32()
        q = T.match_buffer(var_q, (batch_size, h_q, head_dim), dtype)
        pages = T.match_buffer(var_pages, (max_num_pages, 2, h_kv, page_size, head_dim), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=page_indptr_offset)
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=page_values_offset)
        last_page_len = T.match_buffer(var_length_info, (batch_size,), "int32", elem_offset=length_info_offset)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_rope_offset)
        q_rope_position = T.match_buffer(var_q_rope_position, (batch_size,), "int32", elem_offset=q_rope_offset)
        output = T.match_buffer(var_output, (batch_size, h_q, head_dim), dtype)
        lse = T.match_buffer(var_lse, (batch_size, h_q), "float32")

        if batch_size >= heads:
            for task in T.parallel(batch_size * tasks_per_row):
                b = T.meta_var(task // tasks_per_row)
                with T.sblock("attend_shared"):
                    attend_shared(q, pages, page_values, page_indptr, output, lse, sm_scale, b, b, task % tasks_per_row * heads,
                                  _cached_keys(page_indptr, last_page_len, b, page_size))
        else:
            for task in T.parallel(batch_size * h_q):
                b = T.meta_var(task // h_q)
                with T.sblock("attend_each"):
                    attend_each(q, pages, page_values, page_indptr, output, lse, sm_scale, b, b, task % h_q,
                                _cached_keys(page_indptr, last_page_len, b, page_size))
    # fmt: on
    return paged_decode.with_attrs({"tirx.is_scheduled": True, KERNEL_ATTR: "attention"})


PAGED_PREFILL_NAME = "batch_prefill_paged_kv_cpu"
"""The cache's kernel for queries attending to cached pages beside a ragged prefill: a chunk
appended to a sequence that already holds tokens, and the prefix that forked sequences share
(a decode step then attends to it through this kernel, all the sharing rows at once)."""


QUERY_BLOCK = 16
"""Query rows of one sequence a prefill task attends together, one per vector lane."""
KEY_TILE = 16
"""The chunk's own keys a ragged-prefill task scores at once (as a page of the cache holds)."""
KEYS_AT_ONCE = 8
"""Keys whose score vectors a block task sums at once: 8 x 16 floats, half a KiB, which LLVM keeps
in registers (a whole page's 1 KiB it left in memory, and the kernel ran 1.5x slower)."""
BLOCK_MIN_ROWS = 4
"""Fewer rows than this (a decode step of forked sequences: one each) take the one-row softmax."""


def _query_block_softmax(group: int, head_dim: int, page_size: int, dtype: str = "float32", ragged: bool = False):
    """A macro attending QUERY_BLOCK query rows of sequence `b` (tokens first_token.., the last
    n_rows of them real, the rest repeating the last real one and never written) and one head to
    the sequence's cached pages, row r seeing its first visible[r] keys. The rows are the vector
    lanes: a page's scores are sixteen vectors, each key's dot product a multiply-add per head
    dimension with the key's element broadcast, so no dot product ends in a horizontal sum (the
    one-row softmax spends more on those sums than on the products) and each key is read once
    for the whole block; the weighted values accumulate row by row along the head dimension.

    `ragged`: the keys and values are the chunk's own, `keys` and `values` [tokens, h_kv, dim]
    from row `base` to `last` of them, taken page_size at a time; else `keys` is the cache's
    pages (and `values` the same), the sequence's pages listed from page_indptr[b].

    Keys and values in halves (`dtype` float16) are widened a page at a time into float32 copies:
    read where they are, each key element was loaded, widened and broadcast once per dot product
    step, and a 2,048-token prompt prefilled at 872-894 tok/s against float32's 1,040-1,080;
    widened once a page, at float32's rate (1,008-1,036 against 982-1,056 in one sitting)."""
    rows = QUERY_BLOCK
    halves = dtype != "float32"

    # fmt: off
    @T.macro
    def attend_block(q, keys, values, page_values, page_indptr, output, lse, sm_scale, b, first_token, n_rows, head, visible, base, last):
        kv = T.meta_var(head // group)
        query = T.sblock_alloc_buffer((head_dim, rows), "float32")  # transposed, in log2 units
        scores = T.sblock_alloc_buffer((page_size, rows), "float32")  # then the page's weights
        acc = T.sblock_alloc_buffer((rows, head_dim), "float32")
        state = T.sblock_alloc_buffer((4, rows), "float32")  # running max, denominator, page max, rescale
        reach = T.sblock_alloc_buffer((2,), "int32")  # the furthest row's keys, the page's id
        if halves:
            wide = T.sblock_alloc_buffer((2, page_size, head_dim), "float32")  # the page's keys, values
        for d in T.serial(head_dim):
            for r in T.vectorized(rows):
                query[d, r] = as_float32(q[first_token + T.min(r, n_rows - 1), head, d]) * sm_scale * T.float32(LOG2_E)
        for r in T.serial(rows):
            for i in T.vectorized(head_dim):
                acc[r, i] = T.float32(0)
        for r in T.vectorized(rows):
            state[0, r] = T.float32(-5e4)
            state[1, r] = T.float32(0)
        reach[0] = 0
        for r in T.serial(rows):
            reach[0] = T.max(reach[0], visible[r])
        for page in T.serial((reach[0] + page_size - 1) // page_size):
            if not ragged:
                reach[1] = page_values[page_indptr[b] + page]
            page_id = T.meta_var(reach[1])
            if halves:
                for key in T.serial(page_size):
                    for i in T.vectorized(head_dim):
                        if ragged:
                            wide[0, key, i] = as_float32(keys[T.min(base + page * page_size + key, last), kv, i])
                            wide[1, key, i] = as_float32(values[T.min(base + page * page_size + key, last), kv, i])
                        else:
                            wide[0, key, i] = as_float32(keys[page_id, 0, kv, key, i])
                            wide[1, key, i] = as_float32(values[page_id, 1, kv, key, i])
            for half in T.serial(page_size // KEYS_AT_ONCE):
                # Under 1 KiB, so that LLVM keeps the KEYS_AT_ONCE score vectors in registers.
                dots = T.sblock_alloc_buffer((KEYS_AT_ONCE, rows), "float32")
                for key in T.unroll(KEYS_AT_ONCE):
                    for r in T.vectorized(rows):
                        dots[key, r] = T.float32(0)
                for d in T.serial(head_dim):
                    for key in T.unroll(KEYS_AT_ONCE):
                        for r in T.vectorized(rows):
                            if halves:
                                dots[key, r] = dots[key, r] + query[d, r] * wide[0, half * KEYS_AT_ONCE + key, d]
                            elif ragged:  # past the chunk's last key the last one (masked below)
                                dots[key, r] = dots[key, r] + query[d, r] * keys[T.min(base + page * page_size + half * KEYS_AT_ONCE + key, last), kv, d]
                            else:
                                dots[key, r] = dots[key, r] + query[d, r] * keys[page_id, 0, kv, half * KEYS_AT_ONCE + key, d]
                for key in T.unroll(KEYS_AT_ONCE):
                    for r in T.vectorized(rows):
                        scores[half * KEYS_AT_ONCE + key, r] = dots[key, r]
            for r in T.vectorized(rows):
                state[2, r] = state[0, r]
            for key in T.unroll(page_size):
                for r in T.vectorized(rows):
                    # Keys past a row's reach (and a last page's unwritten slots) weigh nothing.
                    scores[key, r] = T.if_then_else(page * page_size + key < visible[r], scores[key, r], T.float32(-5e4))
                    state[2, r] = T.max(state[2, r], scores[key, r])
            for r in T.vectorized(rows):
                state[3, r] = exp2(state[0, r] - state[2, r])
                state[1, r] = state[1, r] * state[3, r]
                state[0, r] = state[2, r]
            for key in T.unroll(page_size):
                for r in T.vectorized(rows):
                    scores[key, r] = T.if_then_else(page * page_size + key < visible[r], exp2(scores[key, r] - state[0, r]), T.float32(0))
                    state[1, r] = state[1, r] + scores[key, r]
            for r in T.serial(rows):
                for i in T.vectorized(head_dim):
                    acc[r, i] = acc[r, i] * state[3, r]
                # Only keys some row sees: a slot never written may hold NaN, and 0 * NaN is NaN.
                for key in T.serial(T.min(page_size, reach[0] - page * page_size)):
                    for i in T.vectorized(head_dim):
                        if halves:
                            acc[r, i] = acc[r, i] + scores[key, r] * wide[1, key, i]
                        elif ragged:
                            acc[r, i] = acc[r, i] + scores[key, r] * values[base + page * page_size + key, kv, i]
                        else:
                            acc[r, i] = acc[r, i] + scores[key, r] * values[page_id, 1, kv, key, i]
        for r in T.serial(rows):
            if r < n_rows:
                for i in T.vectorized(head_dim):
                    output[first_token + r, head, i] = stored_as(T.if_then_else(state[1, r] > T.float32(0), acc[r, i] / state[1, r], T.float32(0)), output.dtype)
                lse[first_token + r, head] = T.if_then_else(state[1, r] > T.float32(0), state[0, r] + T.log2(state[1, r]), T.float32(-5e4))
    # fmt: on
    return attend_block


def paged_prefill_attention(h_kv: int, h_q: int, head_dim: int, page_size: int = 16, dtype: str = "float32"):
    """One task per block of up to QUERY_BLOCK query rows of a sequence and head, in parallel:
    each row attends to its sequence's cached keys (all of them, or with `causal` those up to
    its own position), page by page, through _query_block_softmax, or one row at a time
    (_online_softmax) in blocks of fewer than BLOCK_MIN_ROWS rows. apache-tvm's serial kernel
    walks every position of the whole cache for every query, so a batch of forked sequences took
    ten times as long to decode as the same batch unforked; a task per row, a 2,048-token
    prompt prefilled in 256-token chunks at 648-667 tok/s, against 845-864 in blocks."""
    attend = _online_softmax(h_q // h_kv, head_dim, page_size)
    attend_block = _query_block_softmax(h_q // h_kv, head_dim, page_size, dtype)
    rows = QUERY_BLOCK

    # fmt: off
    @T.prim_func(s_tir=True)
    def paged_prefill(
        var_q: T.handle, var_q_indptr: T.handle, var_pages: T.handle, var_page_indptr: T.handle,
        var_page_values: T.handle, var_length_info: T.handle, var_k_rope_pos_offset: T.handle,
        var_q_rope_position: T.handle, var_output: T.handle, var_lse: T.handle, causal: T.int32,
        rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        batch_size = T.int32()
        total_len = T.int32()
        nnz_pages = T.int32()
        max_num_pages = T.int32()
        q_indptr_offset = T.int32()
        page_indptr_offset = T.int32()
        page_values_offset = T.int32()
        k_rope_offset = T.int32()
        q_rope_offset = T.int32()
        length_info_offset = T.int32()
        q = T.match_buffer(var_q, (total_len, h_q, head_dim), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_indptr_offset)
        pages = T.match_buffer(var_pages, (max_num_pages, 2, h_kv, page_size, head_dim), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=page_indptr_offset)
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=page_values_offset)
        last_page_len = T.match_buffer(var_length_info, (batch_size,), "int32", elem_offset=length_info_offset)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_rope_offset)
        q_rope_position = T.match_buffer(var_q_rope_position, (total_len,), "int32", elem_offset=q_rope_offset)
        output = T.match_buffer(var_output, (total_len, h_q, head_dim), dtype)
        lse = T.match_buffer(var_lse, (total_len, h_q), "float32")

        with T.sblock("blocks"):
            count = T.sblock_alloc_buffer((1,), "int32")  # query blocks over all sequences
            count[0] = 0
            for j in T.serial(batch_size):
                count[0] = count[0] + (q_indptr[j + 1] - q_indptr[j] + rows - 1) // rows
            for task in T.parallel(count[0] * h_q):
                block = T.meta_var(task // h_q)
                head = T.meta_var(task % h_q)
                with T.sblock("attend"):
                    # The block's sequence, the blocks before it, a running count; its first row
                    # in the sequence, its rows, the sequence's keys.
                    where = T.sblock_alloc_buffer((6,), "int32")
                    visible = T.sblock_alloc_buffer((rows,), "int32")
                    where[0] = 0
                    where[1] = 0
                    where[2] = 0
                    for j in T.serial(batch_size):
                        if where[2] <= block:  # the last sequence starting at or before it owns it
                            where[0] = j
                            where[1] = where[2]
                        where[2] = where[2] + (q_indptr[j + 1] - q_indptr[j] + rows - 1) // rows
                    b = T.meta_var(where[0])
                    where[3] = (block - where[1]) * rows
                    where[4] = T.min(rows, q_indptr[b + 1] - q_indptr[b] - where[3])
                    where[5] = _cached_keys(page_indptr, last_page_len, b, page_size)
                    for r in T.serial(rows):
                        visible[r] = where[5]
                        if causal > 0:
                            visible[r] = _causal_keys(where[5], q_indptr[b + 1] - q_indptr[b], where[3] + T.min(r, where[4] - 1))
                    if where[4] >= BLOCK_MIN_ROWS:
                        attend_block(q, pages, pages, page_values, page_indptr, output, lse, sm_scale, b, q_indptr[b] + where[3], where[4], head, visible, 0, 0)
                    else:
                        for r in T.serial(where[4]):
                            attend(q, pages, page_values, page_indptr, output, lse, sm_scale, b, q_indptr[b] + where[3] + r, head, visible[r])
    # fmt: on
    return paged_prefill.with_attrs({"tirx.is_scheduled": True, KERNEL_ATTR: "attention"})


ROPE_NAME = "fused_rope"
"""The KV cache's function that splits the fused q/k/v and rotates q and k (apache-tvm 0.27)."""


def supports_rope(rope_scaling: dict | None) -> bool:
    """The rotate-half layout with TVM's default or llama3 frequencies (not gptj or longrope)."""
    return (rope_scaling or {}).get("rope_type", "default") in ("default", "llama3")


def fused_rope(
    h_q: int, h_kv: int, head_dim: int, theta: float, scale: float, rope_scaling: dict | None, dtype: str = "float32"
):
    """Split q/k/v and apply RoPE, one task per token: the cosines and sines are computed once
    per token and frequency (head_dim / 2 of them) and shared by all heads, where TVM's kernel
    calls cos, sin and pow for every element of every head. Same frequencies (TVM's own
    functions), same arithmetic."""
    from tvm.relax.frontend.nn.llm.position_embedding import switch_rope_freq_func

    scaling = {key: value for key, value in (rope_scaling or {}).items() if key != "rope_type" or value != "default"}
    frequencies = switch_rope_freq_func(scaling)
    half = head_dim // 2
    fused_heads = h_q + 2 * h_kv

    def rotation(position: tirx.PrimExpr, i: tirx.PrimExpr, part: int) -> tirx.PrimExpr:
        cos, sin, bindings = frequencies(position * tirx.const(scale, "float32"), i, head_dim, theta, "float32")
        expr = cos if part == 0 else sin
        for var, value in bindings.items():
            expr = tirx.Let(var, value, expr)
        return expr

    # fmt: off
    @T.macro
    def rotate(qkv, position_map, q, k, v, apply_rope, s):
        with T.sblock("rope"):
            cos = T.sblock_alloc_buffer((half,), "float32")
            sin = T.sblock_alloc_buffer((half,), "float32")
            for i in T.serial(half):
                cos[i] = T.if_then_else(apply_rope > 0, rotation(position_map[s], i, 0), T.float32(1))
                sin[i] = T.if_then_else(apply_rope > 0, rotation(position_map[s], i, 1), T.float32(0))
            for h in T.serial(h_q + h_kv):
                for i in T.vectorized(half):
                    if h < h_q:
                        q[s, h, i] = stored_as(cos[i] * as_float32(qkv[s, h, i]) + sin[i] * (T.float32(0) - as_float32(qkv[s, h, i + half])), dtype)
                        q[s, h, i + half] = stored_as(cos[i] * as_float32(qkv[s, h, i + half]) + sin[i] * as_float32(qkv[s, h, i]), dtype)
                    else:
                        k[s, h - h_q, i] = stored_as(cos[i] * as_float32(qkv[s, h, i]) + sin[i] * (T.float32(0) - as_float32(qkv[s, h, i + half])), dtype)
                        k[s, h - h_q, i + half] = stored_as(cos[i] * as_float32(qkv[s, h, i + half]) + sin[i] * as_float32(qkv[s, h, i]), dtype)
            for h in T.serial(h_kv):
                for i in T.vectorized(head_dim):
                    v[s, h, i] = qkv[s, h_q + h_kv + h, i]

    @T.prim_func(s_tir=True)
    def rope(var_qkv: T.handle, var_position_map: T.handle, var_q: T.handle, var_k: T.handle, var_v: T.handle, apply_rope: T.int64):
        seq_len = T.int32()
        position_map_offset = T.int32()
        qkv = T.match_buffer(var_qkv, (seq_len, fused_heads, head_dim), dtype)
        q = T.match_buffer(var_q, (seq_len, h_q, head_dim), dtype)
        k = T.match_buffer(var_k, (seq_len, h_kv, head_dim), dtype)
        v = T.match_buffer(var_v, (seq_len, h_kv, head_dim), dtype)
        position_map = T.match_buffer(var_position_map, (seq_len,), "int32", elem_offset=position_map_offset)
        # One decode token (or a batch of one) runs serially: a parallel launch of one task
        # still wakes the thread pool.
        if seq_len > 1:
            for s in T.parallel(seq_len):
                rotate(qkv, position_map, q, k, v, apply_rope, s)
        else:
            for s in T.serial(seq_len):
                rotate(qkv, position_map, q, k, v, apply_rope, s)
    # fmt: on
    return rope.with_attrs({"tirx.is_scheduled": True, "op_pattern": 8, KERNEL_ATTR: "attention"})
