"""Memory bandwidth as decode sees it: a streaming read of a buffer much larger than the caches,
in a TVM kernel over the same thread pool the model uses. Decode tok/s is bounded by this over
the bytes of weights read per token."""

from __future__ import annotations

import time

BUFFER_MB = 256
LANES = 16
ACCUMULATORS = 4
"""Independent vector accumulators, so the adds never wait on each other and only memory limits."""
REPEATS = 8


def measure_read_gb_s(threads: int = 2) -> float:
    """GB/s of the best of REPEATS full reads of a BUFFER_MB float32 buffer."""
    import numpy as np
    import tvm
    from tvm import te
    from tvm.s_tir import Schedule

    chunk = LANES * ACCUMULATORS
    steps = BUFFER_MB * 1024 * 1024 // 4 // threads // chunk
    x = te.placeholder((threads, steps, ACCUMULATORS, LANES), "float32", name="x")
    k = te.reduce_axis((0, steps), name="k")
    y = te.compute((threads, ACCUMULATORS, LANES), lambda p, a, lane: te.sum(x[p, k, a, lane], axis=k), name="y")
    sch = Schedule(te.create_prim_func([x, y]))
    block = sch.get_sblock("y")
    part, acc, lane, step = sch.get_loops(block)
    sch.reorder(part, step, acc, lane)
    sch.parallel(part)
    registers = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(registers, part)
    sch.unroll(acc)
    sch.vectorize(lane)
    sch.decompose_reduction(block, step)
    kernel = tvm.tirx.build(sch.mod, target=tvm.target.Target.from_device(tvm.cpu()))
    device = tvm.cpu()
    data = tvm.runtime.tensor(np.ones((threads, steps, ACCUMULATORS, LANES), "float32"), device)
    out = tvm.runtime.tensor(np.zeros((threads, ACCUMULATORS, LANES), "float32"), device)
    kernel(data, out)  # warm-up: page faults and thread start
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        kernel(data, out)
        best = min(best, time.perf_counter() - started)
    return threads * steps * chunk * 4 / best / 1e9
