"""Where one batched decode step spends its time, at 1, 4, 8 and 16 rows (`--rows`): the whole
step (BatchSession.decode_for_sampling: embed, the KV cache's begin/end, batch_decode, the
logits' block statistics and download),
each compiled function the relax VM calls in it (attention runs inside the KV cache's builtins),
and the scheduler's sampling of every row (engine.sampling.sample_rows, greedy). Model: SmolLM2's
Q4_1 GGUF as it is (`--model smollm2`, the default), a SmolLM2-135M-shaped random q4f16_1 model
(`--model 135m`: the int8 path on a CPU with AVX2 or VNNI), or a model directory. `--shared N`:
every row forks the first N context tokens from one parent (served requests sharing a system
prompt attend to those pages through the cache's paged-prefill kernel). `--context N`: each row
holds N tokens before the timed steps (default 64; a long conversation's attention reads
thousands), prefilled in chunks of up to 256 as `tandem serve` does (prefill_tok_s: their rate, each chunk attending
to those before it). `--json` prints one
JSON object as the last line (cpu_ms: the process's CPU time per step, which other processes on a
busy machine do not inflate; with TVM_NUM_THREADS=1 it is the step's work, with more threads it also
counts the pool's spinning): {"model", "shared", "context", "rows": [...], "step_ms": [...],
"cpu_ms": [...], "agg_tok_s": [...], "sample_ms": [...], "prefill_tok_s": [...], "functions": {rows: [[name, ms, calls], ...]}}."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTEXT_TOKENS = 64
"""Each sequence's prompt before the timed steps, unless `--context` says otherwise: the
attention reads this much cache."""
STEPS = 16
TOP_FUNCTIONS = 16


def model_dir_for(choice: str, scratch: Path) -> Path:
    sys.path[0] = str(REPO_ROOT)
    from bench.serve import model_dir_for as serve_model_dir

    return serve_model_dir(choice, scratch)[0]


def profile(batch, rows: int, vocab: int, shared: int = 0, cpu_clock: bool = False, context: int = CONTEXT_TOKENS) -> dict:
    """`shared` > 0: every row forks the first `shared` tokens of one parent's prompt (a burst of
    requests with one system prompt), so the step attends to those shared pages too."""
    import numpy as np

    from engine import sampling

    ids = list(range(rows))
    rng = np.random.default_rng(rows)
    parent = rows + 1
    prompt = rng.integers(0, vocab, context).tolist()
    if shared:
        batch.add(parent)
        _prefill(batch, parent, prompt)
    prefill_s = 0.0
    for sequence in ids:
        if shared:
            batch.fork(parent, sequence, shared)
        else:
            batch.add(sequence)
        started = time.perf_counter()
        _prefill(batch, sequence, rng.integers(0, vocab, context - shared).tolist())
        prefill_s += time.perf_counter() - started
    tokens = rng.integers(0, vocab, rows).tolist()
    batch.decode(ids, tokens)  # warm-up
    steps, cpu, sampled = [], [], []
    params = [sampling.SamplingParams(temperature=0.0)] * rows
    rngs = [sampling.make_rng(0)] * rows
    for _ in range(STEPS):
        started, cpu_started = time.perf_counter(), time.process_time()
        logits, stats = batch.decode_for_sampling(ids, tokens)
        steps.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        started = time.perf_counter()
        choices = sampling.sample_rows(logits, params, rngs, [[]] * rows, stats)
        sampled.append(time.perf_counter() - started)
        tokens = [c.token_id for c in choices]
    functions = _functions(batch, ids, tokens, time.process_time if cpu_clock else time.perf_counter)
    for sequence in [*ids, parent]:
        batch.remove(sequence)
    step_ms = statistics.median(steps) * 1000
    return {
        "step_ms": round(step_ms, 2),
        "agg_tok_s": round(rows * 1000 / step_ms, 1),
        "cpu_ms": round(statistics.median(cpu) * 1000, 2),
        "sample_ms": round(statistics.median(sampled) * 1000, 2),
        "prefill_tok_s": round(rows * (context - shared) / prefill_s, 1),
        "functions": _top(functions),
    }


def _functions(batch, ids: list[int], tokens: list[int], clock) -> dict[str, list[float]]:
    sys.path[0] = str(REPO_ROOT)
    from bench.engine import vm_call_times

    # the benchmark looks inside the session; nothing else should
    with vm_call_times(batch._vm, clock) as totals:
        for _ in range(4):
            batch.decode(ids, tokens)
    return {name: [seconds * 1000 / 4, calls // 4] for name, (seconds, calls) in totals.items()}


def _top(functions: dict[str, list[float]]) -> list[list]:
    ordered = sorted(functions.items(), key=lambda item: -item[1][0])
    return [[name, round(ms, 3), int(calls)] for name, (ms, calls) in ordered[:TOP_FUNCTIONS]]


def _prefill(batch, sequence: int, tokens: list[int]) -> None:
    """The tokens in the session's chunks (BatchSession.prefill takes one chunk)."""
    for start in range(0, len(tokens), batch.prefill_chunk):
        batch.prefill(sequence, tokens[start : start + batch.prefill_chunk])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), 135m, a .gguf file or a model directory")
    parser.add_argument("--rows", default="1,4,8,16", help="batch sizes, comma-separated")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument(
        "--shared",
        type=int,
        default=0,
        help="tokens of the context every row forks from one parent (default 0)",
    )
    parser.add_argument(
        "--context",
        type=int,
        default=CONTEXT_TOKENS,
        help=f"tokens each row holds before the timed steps (default {CONTEXT_TOKENS}): the cache the attention reads",
    )
    parser.add_argument(
        "--cpu-clock",
        action="store_true",
        help="time each function in CPU time, not wall time (on a busy machine; run with TVM_NUM_THREADS=1)",
    )
    args = parser.parse_args()
    if args.context < 1:
        raise SystemExit("--context takes 1 token or more.")
    if not 0 <= args.shared < args.context:
        raise SystemExit(f"--shared takes 0 to {args.context - 1} tokens (one less than --context).")
    rows_list = [int(n) for n in args.rows.split(",")]
    with tempfile.TemporaryDirectory(prefix="tandem-bench-batch-") as scratch:
        model_dir = model_dir_for(args.model, Path(scratch))
        from engine.loader import open_engine
        from engine.tvm_backend.batch_session import BatchSession
        from engine.tvm_backend.scheduler import STEP_PREFILL_TOKENS

        engine = open_engine(model_dir, backend="tvm")
        try:
            kv_tokens = max(rows_list) * 2 * (args.context + 64)
            batch = BatchSession(engine.session, max(rows_list), kv_tokens, min(args.context, STEP_PREFILL_TOKENS))
            vocab = engine.session.vocab_rows
            figures = {rows: profile(batch, rows, vocab, args.shared, args.cpu_clock, args.context) for rows in rows_list}
        finally:
            engine.close()
    for rows, f in figures.items():
        print(
            f"{rows:3d} rows: step {f['step_ms']:7.2f} ms  cpu {f['cpu_ms']:7.2f} ms  {f['agg_tok_s']:7.1f} tok/s  "
            f"sampling {f['sample_ms']:6.2f} ms  prefill {f['prefill_tok_s']:7.1f} tok/s  top: "
            + ", ".join(f"{name} {ms:.2f} ms x{calls}" for name, ms, calls in f["functions"][:4])
        )
    if args.json:
        result = {"model": args.model, "shared": args.shared, "context": args.context, "rows": rows_list}
        for key in ("step_ms", "cpu_ms", "agg_tok_s", "sample_ms", "prefill_tok_s"):
            result[key] = [figures[r][key] for r in rows_list]
        result["functions"] = {str(r): figures[r]["functions"] for r in rows_list}
        print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
