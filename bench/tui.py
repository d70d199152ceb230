"""How fast Tandem's TUI feels: launch to first paint (the real `python -m app` in a pseudo-terminal),
and Enter to the first streamed token on the embedded model. `--json` prints
{"first_paint_ms", "first_token_ms"} (medians) as the last line. Bars: <= 500 and <= 100 ms."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import select
import statistics
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
LOAD_TIMEOUT_S = 900
"""A first open compiles the model for this machine (cached after); give it time."""
FIRST_FRAME_MARK = b"Search history"
"""Text of the sidebar's search box: once it is on the terminal, the chat has painted."""


def first_paint_ms(home: Path, timeout: float = 30.0) -> float:
    """Spawn `python -m app` on a pseudo-terminal; time until the first frame is written."""
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO_ROOT)
        env = {**os.environ, "TANDEM_HOME": str(home), "TERM": "xterm-256color"}
        os.execve(sys.executable, [sys.executable, "-m", "app"], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 36, 120, 0, 0))
    seen = b""
    try:
        while FIRST_FRAME_MARK not in seen:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"no first frame within {timeout} s")
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                seen = (seen + os.read(fd, 65536))[-65536:]
        return (time.perf_counter() - start) * 1000
    finally:
        _quit(pid, fd)


def _quit(pid: int, fd: int) -> None:
    """Ctrl+Q, drain the terminal while the app exits, and kill it only if it will not."""
    os.write(fd, b"\x11")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        try:
            if select.select([fd], [], [], 0.05)[0]:
                os.read(fd, 65536)
        except OSError:
            break
    if os.waitpid(pid, os.WNOHANG) == (0, 0):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    os.close(fd)


async def until_started(app) -> bool:
    """Wait until the app's history is open and its start-up workers (the model's load among them)
    are done; False if that takes over LOAD_TIMEOUT_S (a first open compiles the model)."""
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while app.store is None or not all(worker.is_finished for worker in app.workers):
        if time.monotonic() > deadline:  # the history opens after the first frame, then the model loads
            return False
        await asyncio.sleep(0.01)
    return True


async def first_token_ms(rounds: int, model_dir: Path | None) -> tuple[list[float], str]:
    """In-process, on the real engine and the embedded model (or `model_dir`): Enter to the first
    token on screen, with the model already loaded."""
    from app.local_models import LocalModel, open_model
    from app.tui.app import TandemApp

    def opener(model: LocalModel, on_progress):
        chosen = LocalModel(model_dir.name, model_dir, "auto") if model_dir else model
        return open_model(chosen, on_progress)

    app = TandemApp(Path(tempfile.mkdtemp()) / "tandem.db", open_engine=opener)
    timings: list[float] = []
    async with app.run_test(size=(120, 36)) as pilot:
        if not await until_started(app):
            return [], f"the model did not load within {LOAD_TIMEOUT_S} s"
        if app.engine is None:
            return [], str(app.chat.query_one("#engine-status").render())
        for _ in range(rounds):
            await pilot.press("ctrl+n", *"What is Tandem?")  # a fresh conversation: comparable turns
            start = time.perf_counter()
            app.simulate_key("enter")  # unlike pilot.press, returns before the app has handled it
            while not (app.chat.reply_view and app.chat.reply_view.content):
                if not app.chat.busy and time.perf_counter() - start > 1:
                    break  # the turn ended without a token (the model stopped at once)
                await asyncio.sleep(0.0005)
            else:
                timings.append((time.perf_counter() - start) * 1000)
            await app.workers.wait_for_complete()
            await pilot.pause()
    return timings, "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", type=Path, help="time the first token on this MLC model dir instead")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()

    paints = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as home:
            paints.append(first_paint_ms(Path(home)))
    paint = statistics.median(paints)
    print(f"launch to first paint: median {paint:.0f} ms over {len(paints)} launches (bar <= 500 ms)")

    tokens, status = asyncio.run(first_token_ms(args.rounds, args.model))
    token = statistics.median(tokens) if tokens else None
    if token is None:
        print(f"Enter to first token: not measured ({status})")
    else:
        on = args.model or "the embedded model"
        print(f"Enter to first token on {on}: median {token:.0f} ms over {len(tokens)} turns (bar <= 100 ms)")
    if args.json:
        first_token = None if token is None else round(token, 1)
        print(json.dumps({"first_paint_ms": round(paint, 1), "first_token_ms": first_token}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
