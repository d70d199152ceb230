"""Per-block statistics of logit rows, computed where the logits are and in parallel: for each
block of BLOCK vocabulary ids (the last one ragged), its maximum and the sum of exp(logit -
maximum). engine.sampling combines a row's blocks into its maximum and log-sum-exp, finds the
argmax inside the leading block, and takes the blocks whose maxima lead as the candidates for
the alternatives: the vocabulary-wide passes numpy otherwise makes one row after another."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

from engine.sampling import CANDIDATE_BLOCK

if TYPE_CHECKING:
    from tvm import tirx

BLOCK = CANDIDATE_BLOCK
"""Vocabulary ids per block: engine.sampling's candidate block, so the maxima double as its candidates."""
LANES = 16
FUNCTION = "logit_stats"
"""The exported function's name: logits [rows, vocab] -> [rows, blocks, 2] (maximum, sum of exp)."""


def blocks(vocab: int) -> int:
    return -(-vocab // BLOCK)


@lru_cache(maxsize=None)
def block_stats_kernel(vocab: int) -> tirx.PrimFunc:
    """One task per (row, block): the block's maximum (16-lane vectors, the ragged end one id at
    a time), then the sum of exp2((logit - maximum) * log2 e) with the inline exp2 (relative
    error about 1e-7; libm's exp is never vectorised). TVM's compiler is imported here, not with
    the module: the sessions read FUNCTION and BLOCK on the warm path, which loads only the runtime."""
    from tvm.script import tirx as T

    from engine.tvm_backend.attention import exp2
    from engine.tvm_backend.kernels import KERNEL_ATTR

    n_blocks = blocks(vocab)
    vectors = BLOCK // LANES
    log2_e = 1 / math.log(2)

    # fmt: off
    @T.prim_func(s_tir=True)
    def stats(var_logits: T.handle, var_out: T.handle):
        rows = T.int64()
        logits = T.match_buffer(var_logits, (rows, vocab), "float32")
        out = T.match_buffer(var_out, (rows, n_blocks, 2), "float32")
        for task in T.parallel(rows * n_blocks):
            with T.sblock("block"):
                row = T.meta_var(task // n_blocks)
                start = T.meta_var(task % n_blocks * BLOCK)
                lanes = T.sblock_alloc_buffer((LANES,), "float32")
                state = T.sblock_alloc_buffer((2,), "float32")  # maximum, sum
                if start + BLOCK <= vocab:
                    for lane in T.vectorized(LANES):
                        lanes[lane] = logits[row, start + lane]
                    for c in T.serial(1, vectors):
                        for lane in T.vectorized(LANES):
                            lanes[lane] = T.max(lanes[lane], logits[row, start + c * LANES + lane])
                    state[0] = lanes[0]
                    for lane in T.serial(1, LANES):
                        state[0] = T.max(state[0], lanes[lane])
                    for lane in T.vectorized(LANES):
                        lanes[lane] = T.float32(0)
                    for c in T.serial(vectors):
                        for lane in T.vectorized(LANES):
                            lanes[lane] = lanes[lane] + exp2((logits[row, start + c * LANES + lane] - state[0]) * T.float32(log2_e))
                    state[1] = T.float32(0)
                    for lane in T.serial(LANES):
                        state[1] = state[1] + lanes[lane]
                else:
                    state[0] = logits[row, start]
                    for i in T.serial(1, vocab - start):
                        state[0] = T.max(state[0], logits[row, start + i])
                    state[1] = T.float32(0)
                    for i in T.serial(vocab - start):
                        state[1] = state[1] + exp2((logits[row, start + i] - state[0]) * T.float32(log2_e))
                out[row, task % n_blocks, 0] = state[0]
                out[row, task % n_blocks, 1] = state[1]
    # fmt: on
    return stats.with_attrs({"tirx.is_scheduled": True, "op_pattern": 8, KERNEL_ATTR: "logit_stats"})
