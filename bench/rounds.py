"""Engines measured in turns: each engine runs in a worker process of its own, and the parent
asks the workers for one round at a time, alternating (A B, then B A), so that a change in the
host's speed falls on every engine alike. On the 2-core CI host the memory bandwidth moved
between 15 and 37 GB/s from one run to the next, which made ratios taken from engines measured
one after the other swing by more than the margins they were meant to show.

A worker that is not running a round is stopped (SIGSTOP) until its next one, so that its idle
threads (llama.cpp's OpenMP threads keep spinning after each call) take nothing from the other.

What this module owns: the worker's side of the protocol (serve_rounds), the parent's handle on
a worker (Worker), the alternation (alternate) and the summaries (median_round, paired_ratios).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MARK = "@rounds "
"""Prefix of the protocol's lines on a worker's stdout; anything else a library prints is ignored."""


@dataclass(frozen=True)
class Round:
    prefill_s: float
    """Seconds to prefill the prompt."""
    step_s: float
    """Median seconds per decoded token over the round's decode steps."""


def serve_rounds(one_round: Callable[[], Round], ready: dict, finish: Callable[[], dict]) -> None:
    """The worker's side: `ready` once loaded and warmed up, then one reply per line on stdin:
    "round" runs one round, "finish" replies with finish() and returns."""
    _reply(ready)
    for line in sys.stdin:
        command = line.strip()
        if command == "round":
            measured = one_round()
            _reply({"prefill_s": measured.prefill_s, "step_s": measured.step_s})
        elif command == "finish":
            _reply(finish())
            return


def _reply(message: dict) -> None:
    print(MARK + json.dumps(message), flush=True)


class Worker:
    """One engine's worker process, stopped whenever it is not running a round."""

    def __init__(self, what: str, command: Sequence[str], env: dict[str, str]):
        self.what = what
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            list(command), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        self.ready = self._read()
        self._pause()

    def round(self) -> Round:
        self._resume()
        self._send("round")
        reply = self._read()
        self._pause()
        return Round(reply["prefill_s"], reply["step_s"])

    def finish(self) -> dict:
        self._resume()
        self._send("finish")
        reply = self._read()
        self._process.wait()
        self._stderr.close()
        return reply

    def _send(self, command: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()

    def _read(self) -> dict:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        code = self._process.wait()
        self._stderr.seek(0)
        said = self._stderr.read()[-4000:]
        sys.exit(f"The {self.what} measurement failed ({process_ending(code)}):\n{said}")

    def _pause(self) -> None:
        if hasattr(signal, "SIGSTOP"):
            os.kill(self._process.pid, signal.SIGSTOP)

    def _resume(self) -> None:
        if hasattr(signal, "SIGCONT"):
            os.kill(self._process.pid, signal.SIGCONT)


def alternate(workers: dict[str, Worker], rounds: int) -> dict[str, list[Round]]:
    """`rounds` rounds of every worker, in turns whose order flips each time (A B B A ...), so
    neither engine always runs right after the other."""
    measured: dict[str, list[Round]] = {name: [] for name in workers}
    names = list(workers)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            measured[name].append(workers[name].round())
    return measured


def median_round(rounds: Sequence[Round]) -> Round:
    return Round(statistics.median(r.prefill_s for r in rounds), statistics.median(r.step_s for r in rounds))


@dataclass(frozen=True)
class Ratios:
    """Ours over theirs, in tokens per second (above 1: ours is faster), from rounds run side by
    side: the median of the per-round ratios, and their range."""

    decode: float
    prefill: float
    decode_range: tuple[float, float]
    prefill_range: tuple[float, float]


def paired_ratios(ours: Sequence[Round], theirs: Sequence[Round]) -> Ratios:
    decode = [their.step_s / our.step_s for our, their in zip(ours, theirs, strict=True)]
    prefill = [their.prefill_s / our.prefill_s for our, their in zip(ours, theirs, strict=True)]
    return Ratios(
        statistics.median(decode),
        statistics.median(prefill),
        (min(decode), max(decode)),
        (min(prefill), max(prefill)),
    )


def process_ending(code: int) -> str:
    """How a worker process ended, in words: a crash in native code leaves no traceback, only its signal."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
