"""Parallel, vectorised CPU kernels for the paged KV cache's attention, in place of apache-tvm's
serial scalar ones (same signatures, same results): the ragged prefill (the prompt chunk
attending to itself) and the decode step (one query per sequence attending to its pages).

The KV caches Tandem builds apply RoPE before attention (RopeMode.NORMAL), so the kernel never
sees rotary_mode 1 and leaves q and k as they come. Scores are in log2 units and `lse` is
max + log2(sum), as the cache's state-merging kernel expects."""

from __future__ import annotations

import math

from tvm.script import tirx as T

from engine.tvm_backend.kernels import KERNEL_ATTR

RAGGED_PREFILL_NAME = "batch_prefill_ragged_kv"
DECODE_NAME = "batch_decode_paged_kv_cpu"
"""The names of the functions the TIR paged KV cache calls for them (apache-tvm 0.27)."""
LANES = 16
LOG2_E = math.log2(math.e)


def supports(head_dim: int) -> bool:
    """The kernel works in 16-lane vectors along the head dimension."""
    return head_dim % LANES == 0


def ragged_prefill_attention(h_kv: int, h_q: int, head_dim: int):
    """One task per (query token, head), in parallel: an online softmax over the visible keys
    with the dot products and the value accumulation vectorised along the head dimension
    (which must be a multiple of 16: see supports)."""
    group = h_q // h_kv
    lanes = LANES
    blocks = head_dim // lanes

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
        q = T.match_buffer(var_q, (qo_len, h_q, head_dim), "float32")
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_indptr_offset)
        k = T.match_buffer(var_k, (kv_len, h_kv, head_dim), "float32")
        v = T.match_buffer(var_v, (kv_len, h_kv, head_dim), "float32")
        kv_indptr = T.match_buffer(var_kv_indptr, (batch_size + 1,), "int32", elem_offset=kv_indptr_offset)
        q_rope_position = T.match_buffer(var_q_rope_position, (qo_len,), "int32", elem_offset=q_rope_offset)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_rope_offset)
        output = T.match_buffer(var_output, (qo_len, h_q, head_dim), "float32")
        lse = T.match_buffer(var_lse, (qo_len, h_q), "float32")

        for b in T.serial(batch_size):
            for task in T.parallel((q_indptr[b + 1] - q_indptr[b]) * h_q):
                with T.sblock("attend"):
                    acc = T.sblock_alloc_buffer((head_dim,), "float32")
                    partial = T.sblock_alloc_buffer((lanes,), "float32")
                    state = T.sblock_alloc_buffer((3,), "float32")  # running max, denominator, score/weight
                    for i in T.vectorized(head_dim):
                        acc[i] = T.float32(0)
                    state[0] = T.float32(-5e4)
                    state[1] = T.float32(0)
                    for key in T.serial(T.if_then_else(causal > 0, (kv_indptr[b + 1] - kv_indptr[b]) - (q_indptr[b + 1] - q_indptr[b]) + task // h_q + 1, kv_indptr[b + 1] - kv_indptr[b])):
                        for lane in T.vectorized(lanes):
                            partial[lane] = T.float32(0)
                        for block in T.serial(blocks):
                            for lane in T.vectorized(lanes):
                                partial[lane] = partial[lane] + q[q_indptr[b] + task // h_q, task % h_q, block * lanes + lane] * k[kv_indptr[b] + key, task % h_q // group, block * lanes + lane]
                        # Pairwise halving: three vector adds instead of fifteen scalar ones.
                        for lane in T.vectorized(8):
                            partial[lane] = partial[lane] + partial[lane + 8]
                        for lane in T.vectorized(4):
                            partial[lane] = partial[lane] + partial[lane + 4]
                        for lane in T.vectorized(2):
                            partial[lane] = partial[lane] + partial[lane + 2]
                        state[2] = (partial[0] + partial[1]) * sm_scale * T.float32(LOG2_E)
                        if state[2] > state[0]:
                            for i in T.vectorized(head_dim):
                                acc[i] = acc[i] * T.exp2(state[0] - state[2])
                            state[1] = state[1] * T.exp2(state[0] - state[2])
                            state[0] = state[2]
                        state[2] = T.exp2(state[2] - state[0])
                        for i in T.vectorized(head_dim):
                            acc[i] = acc[i] + state[2] * v[kv_indptr[b] + key, task % h_q // group, i]
                        state[1] = state[1] + state[2]
                    for i in T.vectorized(head_dim):
                        output[q_indptr[b] + task // h_q, task % h_q, i] = acc[i] / state[1]
                    lse[q_indptr[b] + task // h_q, task % h_q] = state[0] + T.log2(state[1])
    # fmt: on
    return ragged_prefill.with_attrs({"tirx.is_scheduled": True, KERNEL_ATTR: "attention"})


def paged_decode_attention(h_kv: int, h_q: int, head_dim: int, page_size: int = 16):
    """One task per query head, in parallel: an online softmax over the sequence's cached keys,
    page by page, vectorised along the head dimension (a multiple of 16: see supports). The
    serial kernel it replaces took about a quarter of a decode step at a few hundred tokens."""
    group = h_q // h_kv
    lanes = LANES
    blocks = head_dim // lanes

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
        q = T.match_buffer(var_q, (batch_size, h_q, head_dim), "float32")
        pages = T.match_buffer(var_pages, (max_num_pages, 2, h_kv, page_size, head_dim), "float32")
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=page_indptr_offset)
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=page_values_offset)
        last_page_len = T.match_buffer(var_length_info, (batch_size,), "int32", elem_offset=length_info_offset)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_rope_offset)
        q_rope_position = T.match_buffer(var_q_rope_position, (batch_size,), "int32", elem_offset=q_rope_offset)
        output = T.match_buffer(var_output, (batch_size, h_q, head_dim), "float32")
        lse = T.match_buffer(var_lse, (batch_size, h_q), "float32")

        for b in T.serial(batch_size):
            for head in T.parallel(h_q):
                with T.sblock("attend"):
                    acc = T.sblock_alloc_buffer((head_dim,), "float32")
                    partial = T.sblock_alloc_buffer((lanes,), "float32")
                    state = T.sblock_alloc_buffer((3,), "float32")  # running max, denominator, score/weight
                    for i in T.vectorized(head_dim):
                        acc[i] = T.float32(0)
                    state[0] = T.float32(-5e4)
                    state[1] = T.float32(0)
                    for key in T.serial(T.if_then_else(page_indptr[b + 1] > page_indptr[b], (page_indptr[b + 1] - page_indptr[b] - 1) * page_size + last_page_len[b], 0)):
                        for lane in T.vectorized(lanes):
                            partial[lane] = T.float32(0)
                        for block in T.serial(blocks):
                            for lane in T.vectorized(lanes):
                                partial[lane] = partial[lane] + q[b, head, block * lanes + lane] * pages[page_values[page_indptr[b] + key // page_size], 0, head // group, key % page_size, block * lanes + lane]
                        for lane in T.vectorized(8):
                            partial[lane] = partial[lane] + partial[lane + 8]
                        for lane in T.vectorized(4):
                            partial[lane] = partial[lane] + partial[lane + 4]
                        for lane in T.vectorized(2):
                            partial[lane] = partial[lane] + partial[lane + 2]
                        state[2] = (partial[0] + partial[1]) * sm_scale * T.float32(LOG2_E)
                        if state[2] > state[0]:
                            for i in T.vectorized(head_dim):
                                acc[i] = acc[i] * T.exp2(state[0] - state[2])
                            state[1] = state[1] * T.exp2(state[0] - state[2])
                            state[0] = state[2]
                        state[2] = T.exp2(state[2] - state[0])
                        for i in T.vectorized(head_dim):
                            acc[i] = acc[i] + state[2] * pages[page_values[page_indptr[b] + key // page_size], 1, head // group, key % page_size, i]
                        state[1] = state[1] + state[2]
                    for i in T.vectorized(head_dim):
                        output[b, head, i] = T.if_then_else(state[1] > T.float32(0), acc[i] / state[1], T.float32(0))
                    lse[b, head] = T.if_then_else(state[1] > T.float32(0), state[0] + T.log2(state[1]), T.float32(-5e4))
    # fmt: on
    return paged_decode.with_attrs({"tirx.is_scheduled": True, KERNEL_ATTR: "attention"})
