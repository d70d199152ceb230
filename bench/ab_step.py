"""A/B two compiled libraries of one model in one process: batched decode steps of each, taken in
turn (ABBA order), so a busy machine's load falls on both alike. Each library is a model.so from
a Tandem compile cache (`TANDEM_CACHE_DIR/libs/KEY/model.so`; compile the other tree's with its
own TANDEM_CACHE_DIR, or a newer entry of the same model replaces it); both must take the same
parameters (the same model, kinds and matmul mode). The weights are loaded once, by this tree's
code. Prints per row count the median and best step wall time and the median thread CPU time of
each library; `--json`: one JSON object as the last line.

    python bench/ab_step.py OLD/model.so NEW/model.so --rows 1,8,16 [--model smollm2] [--context 64]"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STEPS = 24


def batch_over(session, library: Path, rows: int, context: int):
    """A BatchSession on `library` over `session`'s loaded weights."""
    from engine.tvm_backend.batch_session import BatchSession

    view = types.SimpleNamespace(
        hidden_size=session.hidden_size,
        vocab_rows=session.vocab_rows,
        params=session.params,
        device=session.device,
        library=library,
    )
    # Room for the context, the warm-up and the timed steps.
    return BatchSession(view, rows, rows * (context + STEPS + 8), context)  # type: ignore[arg-type]


def compare(batches: dict, rows: int, context: int, vocab: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(rows)
    prompts = [rng.integers(0, vocab, context).tolist() for _ in range(rows)]
    tokens = rng.integers(0, vocab, rows).tolist()
    ids = list(range(rows))
    for batch in batches.values():
        for sequence in ids:
            batch.add(sequence)
            batch.prefill(sequence, prompts[sequence])
        batch.decode(ids, tokens)  # warm-up
    wall: dict[str, list[float]] = {name: [] for name in batches}
    cpu: dict[str, list[float]] = {name: [] for name in batches}
    names = list(batches)
    for step in range(STEPS):
        for name in names if step % 2 == 0 else reversed(names):
            started, cpu_started = time.perf_counter(), time.thread_time()
            batches[name].decode(ids, tokens)
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.thread_time() - cpu_started)
    for batch in batches.values():
        for sequence in ids:
            batch.remove(sequence)
    return {
        name: {
            "wall_ms": round(statistics.median(wall[name]) * 1000, 2),
            "best_ms": round(min(wall[name]) * 1000, 2),
            "cpu_ms": round(statistics.median(cpu[name]) * 1000, 2),
        }
        for name in names
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="the first library (model.so)")
    parser.add_argument("b", type=Path, help="the second library (model.so)")
    parser.add_argument("--rows", default="1,8,16", help="batch sizes, comma-separated")
    parser.add_argument("--model", default="smollm2", help="as bench/batch_step.py's --model")
    parser.add_argument("--context", type=int, default=64, help="tokens each sequence holds (default 64)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    sys.path[0] = str(REPO_ROOT)
    from bench.batch_step import model_dir_for
    from engine.loader import open_engine

    rows_list = [int(n) for n in args.rows.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="tandem-bench-ab-") as scratch:
        engine = open_engine(model_dir_for(args.model, Path(scratch)), backend="tvm")
        try:
            session = engine.session
            batches = {label: batch_over(session, path, max(rows_list), args.context) for label, path in (("a", args.a), ("b", args.b))}
            for rows in rows_list:
                results[rows] = compare(batches, rows, args.context, session.vocab_rows)
                a, b = results[rows]["a"], results[rows]["b"]
                print(
                    f"{rows:3d} rows: a {a['wall_ms']:7.2f} ms (best {a['best_ms']:7.2f}, cpu {a['cpu_ms']:7.2f})  "
                    f"b {b['wall_ms']:7.2f} ms (best {b['best_ms']:7.2f}, cpu {b['cpu_ms']:7.2f})  b/a {b['wall_ms'] / a['wall_ms']:.3f}",
                    flush=True,
                )
        finally:
            engine.close()
    if args.json:
        print(json.dumps({"a": str(args.a), "b": str(args.b), "context": args.context, "rows": {str(r): v for r, v in results.items()}}))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
