"""How fast a reply decodes while the TUI shows it, against the same engine with no screen: the
screen's renders share the cores (and the interpreter lock) with the engine's threads. Model:
SmolLM2-135M-Instruct's Q4_1 GGUF (`--model smollm2`, the default), a .gguf file or a model
directory. Each round asks for a story in a fresh conversation (offline, the model's own sampling
settings, REPLY_TOKENS at most) and reads the engine's own decode rate (FinishEvent timings);
the engine alone then answers the same requests. `--json` prints one JSON object as the last
line: {"model", "rounds", "engine_tok_s", "tui_tok_s", "tui_share"} (medians; share = tui / engine)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a long story about a robot who learns to paint."
REPLY_TOKENS = 200


class RecordingEngine:
    """The engine, lent to the app (its close() leaves it open) and noting each reply's decode rate."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.rates: list[float] = []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, request, cancel=None):
        from dataclasses import replace

        from engine.api import FinishEvent

        for event in self._engine.generate(replace(request, max_tokens=REPLY_TOKENS), cancel):
            if isinstance(event, FinishEvent) and event.usage.completion_tokens > 1:
                self.rates.append(event.timings.decode_tok_s)
            yield event

    def close(self) -> None:
        pass


def engine_alone(engine, rounds: int) -> list[float]:
    from engine.api import FinishEvent, GenerationRequest

    rates = []
    for seed in range(rounds):
        request = GenerationRequest([{"role": "user", "content": PROMPT}], max_tokens=REPLY_TOKENS, seed=seed)
        for event in engine.generate(request):
            if isinstance(event, FinishEvent):
                rates.append(event.timings.decode_tok_s)
    return rates


async def in_the_tui(lent: RecordingEngine, rounds: int) -> list[float]:
    from app.tui.app import TandemApp
    from bench.tui import LOAD_TIMEOUT_S, until_started

    app = TandemApp(Path(tempfile.mkdtemp()) / "tandem.db", offline=True, open_engine=lambda model, progress: lent)
    async with app.run_test(size=(120, 36)) as pilot:
        if not await until_started(app):
            raise SystemExit(f"the app did not start within {LOAD_TIMEOUT_S} s")
        for _ in range(rounds):
            await pilot.press("ctrl+n", *PROMPT)  # a fresh conversation each round
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
    return lent.rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), a .gguf file or a model directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    from bench.serve import model_dir_for
    from engine.loader import open_engine

    with tempfile.TemporaryDirectory(prefix="tandem-bench-tui-stream-") as scratch:
        engine = open_engine(model_dir_for(args.model, Path(scratch))[0], backend="tvm")
        try:
            engine_alone(engine, 1)  # warm-up
            tui = asyncio.run(in_the_tui(RecordingEngine(engine), args.rounds))
            alone = engine_alone(engine, args.rounds)
        finally:
            engine.close()
    if not tui:
        raise SystemExit("No reply in the TUI decoded more than one token.")
    engine_rate, tui_rate = statistics.median(alone), statistics.median(tui)
    print(f"engine alone: {engine_rate:.1f} tok/s   in the TUI: {tui_rate:.1f} tok/s   ({tui_rate / engine_rate:.0%})")
    if args.json:
        print(json.dumps({
            "model": args.model, "rounds": args.rounds, "engine_tok_s": round(engine_rate, 1),
            "tui_tok_s": round(tui_rate, 1), "tui_share": round(tui_rate / engine_rate, 3),
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
