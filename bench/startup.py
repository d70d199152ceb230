"""How fast Tandem starts: `tandem ask` end to end on the embedded model, first with an empty cache
(cold: the model is compiled and its weights repacked) then warm (the median of --rounds), the
TUI's first paint, and the import time of the heavy modules, each in a fresh interpreter.

`--json` prints {"ask_warm_s", "ask_cold_s", "tui_first_paint_ms", "import_s": {...}} as the last
line. Bar: ask_warm_s <= 1.0 on a quiet machine."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
QUESTION = "How do I search my history?"
IMPORTS = {
    "tvm": "import tvm",
    "tvm_runtime_only": "import engine.tvm_backend.ffi_runtime",
    "torch": "import torch",
    "ml_dtypes": "import ml_dtypes",
    "numpy": "import numpy",
    "app.store": "import app.store",
    "engine.tvm_backend.runtime": "import engine.tvm_backend.runtime",
    "offload.providers": "import offload.providers",
    "textual": "import textual.app",
}
"""What each entry of import_s times, alone in a fresh interpreter (tvm includes what it pulls in:
torch when installed, ml_dtypes, the disco runtime, relax)."""


def ask_seconds(home: Path, cache: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one `python -m app ask --offline --json`, launch to exit; the CPU
    time (user + system, all threads) stays meaningful on a busy machine, the wall time does not."""
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_CACHE_DIR": str(cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "app", "ask", "--offline", "--json", QUESTION],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"tandem ask failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    if reply.get("route") != "local" or not reply.get("reply"):
        raise SystemExit(f"tandem ask did not answer locally: {reply}")
    return elapsed, cpu


def import_seconds(statement: str) -> float | None:
    """Seconds `statement` takes in a fresh interpreter; None when the module is not installed."""
    code = f"import time\nstarted = time.perf_counter()\n{statement}\nprint(time.perf_counter() - started)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return None
    return round(float(done.stdout.strip().splitlines()[-1]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="warm asks (the median is reported)")
    parser.add_argument(
        "--cache", type=Path, help="an existing cache folder: skips the cold ask (ask_cold_s is null)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args()
    from bench.tui import first_paint_ms

    with tempfile.TemporaryDirectory(prefix="tandem-startup-") as scratch:
        home = Path(scratch) / "home"
        cache = args.cache or Path(scratch) / "cache"
        cold = None if args.cache else ask_seconds(home, cache)[0]
        ask_seconds(home, cache)  # unmeasured: records the warm-start index if --cache had none
        warm = [ask_seconds(home, cache) for _ in range(args.rounds)]
        paint = statistics.median(first_paint_ms(home) for _ in range(3))
    figures = {
        "ask_warm_s": round(statistics.median(wall for wall, _ in warm), 3),
        "ask_cold_s": None if cold is None else round(cold, 3),
        "tui_first_paint_ms": round(paint, 1),
        "import_s": {name: import_seconds(statement) for name, statement in IMPORTS.items()},
        "ask_warm_cpu_s": round(statistics.median(cpu for _, cpu in warm), 3),
        "ask_warm_runs_s": [round(wall, 3) for wall, _ in warm],
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")


if __name__ == "__main__":
    main()
