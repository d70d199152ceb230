"""`tandem serve` as a child process for the benchmarks: started on a free port, its URL read from
the line it prints once it is ready."""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def start_tandem_serve(model_dir: Path, extra: Sequence[str] = (), timeout_s: float = 600) -> tuple[subprocess.Popen, str]:
    """(the process, its base URL); SystemExit saying why when it does not come up in time."""
    command = [sys.executable, "-m", "app", "serve", "--port", "0", "--model", str(model_dir), *extra]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    if not select.select([process.stdout], [], [], timeout_s)[0]:
        process.kill()
        raise SystemExit(f"tandem serve printed nothing within {timeout_s} s")
    line = process.stdout.readline()
    if not line.startswith("Serving "):
        process.kill()
        raise SystemExit(f"tandem serve did not start: {line!r}")
    return process, line.split(" at ")[1].split()[0]
