"""How long the sampler takes to choose one token from a row of logits (engine.sampling.sample,
no engine: a seeded random row of `--vocab` logits, SmolLM2's 49,152 by default), for the settings
models commonly ship: greedy, llama.cpp's defaults (temperature 0.8, top-k 40, top-p 0.95, min-p
0.05), a nucleus alone (temperature 0.6, top-p 0.9) and plain temperature 1. `--json` prints one
JSON object as the last line: {"vocab", "ms": {setting: median ms per token}}."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "greedy": {"temperature": 0.0},
    "llama.cpp defaults": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
    "nucleus": {"temperature": 0.6, "top_p": 0.9},
    "temperature 1": {"temperature": 1.0},
}
DRAWS = 200
ROUNDS = 5


def per_token_ms(logits, settings: dict, history: list[int]) -> float:
    from engine.sampling import SamplingParams, make_rng, sample

    params, rng = SamplingParams(**settings), make_rng(0)
    for _ in range(5):
        sample(logits, params, rng, history)
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(DRAWS):
            sample(logits, params, rng, history)
        rounds.append((time.perf_counter() - started) / DRAWS * 1000)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np

    logits = (np.random.default_rng(0).standard_normal(args.vocab) * 3).astype(np.float32)
    history = list(range(100))
    figures = {name: round(per_token_ms(logits, settings, history), 3) for name, settings in SETTINGS.items()}
    for name, ms in figures.items():
        print(f"{name:20s} {ms:7.3f} ms a token")
    if args.json:
        print(json.dumps({"vocab": args.vocab, "ms": figures}))


if __name__ == "__main__":
    main()
