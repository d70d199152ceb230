"""The paged KV cache's CPU attention kernels (engine/tvm_backend/attention.py), called directly on
a hand-built page table against a numpy softmax attention: decode (one query per sequence) over
sequences of several lengths (an empty one, one key, a part-filled last page, whole pages) with
grouped-query heads, the paged prefill kernel's causal and non-causal forms, row by row and in
query blocks, and the ragged prefill kernel (a chunk attending to its own keys); each with a
float32 cache and a float16 one (q, k, v, pages and output in halves, the arithmetic in float32:
the reference takes the same rounded inputs, and the output is compared to a half's precision)."""

from __future__ import annotations

import math

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

H_KV, H_Q, HEAD_DIM, PAGE = 2, 6, 32, 16
LENGTHS = [0, 1, 15, 16, 37]
DTYPES = ["float32", "float16"]
OUTPUT_TOLERANCE = {"float32": {"atol": 2e-5}, "float16": {"atol": 1e-3, "rtol": 1e-3}}
"""The output is stored in the cache's dtype; the log-sum-exp is float32 in both."""


def page_table(lengths: list[int], rng: np.random.Generator, dtype: str = "float32"):
    """Pages holding random keys and values for each sequence (NaN in the slots past its end),
    handed out in a shuffled order:
    (pages, page_indptr, page_values, last_page_len, keys per sequence, values per sequence)."""
    counts = [math.ceil(n / PAGE) for n in lengths]
    order = rng.permutation(sum(counts) + 2).astype(np.int32)  # two pages no sequence uses
    pages = rng.normal(0, 1, (order.shape[0], 2, H_KV, PAGE, HEAD_DIM)).astype(dtype)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    values = order[: indptr[-1]]
    last = np.array([n - (c - 1) * PAGE if c else 0 for n, c in zip(lengths, counts)], np.int32)
    for s, n in enumerate(lengths):
        if counts[s]:  # slots a sequence never wrote may hold anything, NaN included
            pages[values[indptr[s + 1] - 1], :, :, last[s]:] = np.nan
    keys, vals = [], []
    for s, n in enumerate(lengths):
        mine = pages[values[indptr[s] : indptr[s + 1]]]  # [pages, 2, h_kv, PAGE, d]
        flat = mine.transpose(1, 2, 0, 3, 4).reshape(2, H_KV, -1, HEAD_DIM)[:, :, :n]
        keys.append(flat[0])
        vals.append(flat[1])
    return pages, indptr, values, last, keys, vals


def reference(q: np.ndarray, keys: np.ndarray, vals: np.ndarray, sm_scale: float, visible: int):
    """One query row [h_q, d] over the first `visible` keys: (output [h_q, d], lse in log2 units)."""
    out = np.zeros((H_Q, HEAD_DIM))
    lse = np.full(H_Q, -5e4)
    if visible == 0:
        return out, lse
    for h in range(H_Q):
        kv = h // (H_Q // H_KV)
        scores = keys[kv, :visible].astype(np.float64) @ q[h].astype(np.float64) * sm_scale
        peak = scores.max()
        weights = np.exp(scores - peak)
        out[h] = weights @ vals[kv, :visible].astype(np.float64) / weights.sum()
        lse[h] = (peak + np.log(weights.sum())) / np.log(2)
    return out, lse


def build(func):
    target = tvm.target.Target.from_device(tvm.cpu())
    return tvm.tirx.build(tvm.IRModule({"f": func.with_attr("global_symbol", "f")}), target=target)["f"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths", [LENGTHS, [37, 15]], ids=["heads-of-a-group-together", "a-head-a-task"])
def test_decode_attention_matches_numpy(lengths, dtype):
    """Five sequences: each task attends a group's 3 heads; two (fewer than 3): a head each."""
    from engine.tvm_backend.attention import decode_heads, paged_decode_attention

    assert decode_heads(H_Q // H_KV) == 3
    rng = np.random.default_rng(0)
    pages, indptr, values, last, keys, vals = page_table(lengths, rng, dtype)
    batch = len(lengths)
    q = rng.normal(0, 1, (batch, H_Q, HEAD_DIM)).astype(dtype)
    out = np.zeros_like(q)
    lse = np.zeros((batch, H_Q), np.float32)
    sm_scale = 1 / math.sqrt(HEAD_DIM)
    arrays = [tvm.runtime.tensor(a) for a in (q, pages, indptr, values, last, np.zeros(batch, np.int32), np.zeros(batch, np.int32), out, lse)]
    build(paged_decode_attention(H_KV, H_Q, HEAD_DIM, PAGE, dtype))(*arrays, 0, 1.0, 10000.0, sm_scale)
    for s, n in enumerate(lengths):
        expected, expected_lse = reference(q[s], keys[s], vals[s], sm_scale, n)
        np.testing.assert_allclose(arrays[7].numpy()[s], expected, **OUTPUT_TOLERANCE[dtype], err_msg=f"sequence of {n}")
        np.testing.assert_allclose(arrays[8].numpy()[s], expected_lse, atol=2e-5, err_msg=f"sequence of {n}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("longest_chunk", [3, 33], ids=["rows-one-by-one", "rows-in-blocks"])
@pytest.mark.parametrize("causal", [0, 1])
def test_paged_prefill_attention_matches_numpy(causal, longest_chunk, dtype):
    """Each sequence's last `chunk` rows are queries; causal: row r sees the keys up to its own.
    Chunks of up to 3 rows take the one-row softmax; of up to 33, query blocks of 16 rows (whole
    ones, a 15-row one, and a 1-row remainder that takes the one-row softmax) beside a 1-row chunk."""
    from engine.tvm_backend.attention import BLOCK_MIN_ROWS, QUERY_BLOCK, paged_prefill_attention

    assert (QUERY_BLOCK, BLOCK_MIN_ROWS) == (16, 4)
    rng = np.random.default_rng(1)
    lengths = [n for n in LENGTHS if n]
    chunks = [min(n, longest_chunk) for n in lengths]
    pages, indptr, values, last, keys, vals = page_table(lengths, rng, dtype)
    q_indptr = np.concatenate([[0], np.cumsum(chunks)]).astype(np.int32)
    total = int(q_indptr[-1])
    q = rng.normal(0, 1, (total, H_Q, HEAD_DIM)).astype(dtype)
    out = np.zeros_like(q)
    lse = np.zeros((total, H_Q), np.float32)
    sm_scale = 1 / math.sqrt(HEAD_DIM)
    arrays = [
        tvm.runtime.tensor(a)
        for a in (q, q_indptr, pages, indptr, values, last, np.zeros(len(lengths), np.int32), np.zeros(total, np.int32), out, lse)
    ]
    build(paged_prefill_attention(H_KV, H_Q, HEAD_DIM, PAGE, dtype))(*arrays, causal, 0, 1.0, 10000.0, sm_scale)
    for s, (n, chunk) in enumerate(zip(lengths, chunks)):
        for r in range(chunk):
            visible = n - chunk + r + 1 if causal else n
            token = q_indptr[s] + r
            expected, expected_lse = reference(q[token], keys[s], vals[s], sm_scale, visible)
            np.testing.assert_allclose(arrays[8].numpy()[token], expected, **OUTPUT_TOLERANCE[dtype], err_msg=f"{n} keys, row {r}")
            np.testing.assert_allclose(arrays[9].numpy()[token], expected_lse, atol=2e-5, err_msg=f"{n} keys, row {r}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [0, 1])
def test_ragged_prefill_attention_matches_numpy(causal, dtype):
    """A chunk of each sequence attending to its own keys: chunks of 1, 15, 16 and 37 rows (query
    blocks of 16: partly filled, whole, and two whole ones beside a partial one, and key tiles
    past the chunk's end), causal or not."""
    from engine.tvm_backend.attention import ragged_prefill_attention

    rng = np.random.default_rng(2)
    lengths = [1, 15, 16, 37]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    total = int(indptr[-1])
    q = rng.normal(0, 1, (total, H_Q, HEAD_DIM)).astype(dtype)
    k = rng.normal(0, 1, (total, H_KV, HEAD_DIM)).astype(dtype)
    v = rng.normal(0, 1, (total, H_KV, HEAD_DIM)).astype(dtype)
    out = np.zeros_like(q)
    lse = np.zeros((total, H_Q), np.float32)
    sm_scale = 1 / math.sqrt(HEAD_DIM)
    zeros = np.zeros(total, np.int32)
    arrays = [tvm.runtime.tensor(a) for a in (q, indptr, k, v, indptr, zeros, np.zeros(len(lengths), np.int32), out, lse)]
    build(ragged_prefill_attention(H_KV, H_Q, HEAD_DIM, dtype))(*arrays, causal, 0, 1.0, 10000.0, sm_scale)
    for s, n in enumerate(lengths):
        keys = k[indptr[s] : indptr[s + 1]].transpose(1, 0, 2)
        vals = v[indptr[s] : indptr[s + 1]].transpose(1, 0, 2)
        for r in range(n):
            token = indptr[s] + r
            expected, expected_lse = reference(q[token], keys, vals, sm_scale, r + 1 if causal else n)
            np.testing.assert_allclose(arrays[7].numpy()[token], expected, **OUTPUT_TOLERANCE[dtype], err_msg=f"{n} rows, row {r}")
            np.testing.assert_allclose(arrays[8].numpy()[token], expected_lse, atol=2e-5, err_msg=f"{n} rows, row {r}")
