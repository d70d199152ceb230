"""bench/rounds.py: workers in real processes answer rounds in turns (A B, then B A), a worker
that dies says which measurement failed, and the ratios are taken per pair of rounds."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from bench.rounds import Round, Worker, alternate, median_round, paired_ratios

REPO_ROOT = Path(__file__).resolve().parents[2]


def _worker(tmp_path: Path, name: str, step_s: float, log: Path) -> Worker:
    """A worker whose rounds take no time but report `step_s` and append its name to `log`."""
    script = tmp_path / f"{name}.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from bench.rounds import Round, serve_rounds
            print("a library's own chatter on stdout")
            def one_round():
                with open({str(log)!r}, "a") as out:
                    out.write({name!r} + " ")
                return Round(prefill_s=2 * {step_s}, step_s={step_s})
            serve_rounds(one_round, {{"name": {name!r}}}, lambda: {{"bye": {name!r}}})
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return Worker(name, [sys.executable, str(script)], env)


def test_workers_take_rounds_in_alternating_turns(tmp_path):
    log = tmp_path / "order.txt"
    workers = {"ours": _worker(tmp_path, "ours", 0.01, log), "theirs": _worker(tmp_path, "theirs", 0.02, log)}
    assert workers["ours"].ready == {"name": "ours"}
    rounds = alternate(workers, 4)
    assert log.read_text().split() == ["ours", "theirs", "theirs", "ours", "ours", "theirs", "theirs", "ours"]
    assert [worker.finish() for worker in workers.values()] == [{"bye": "ours"}, {"bye": "theirs"}]
    assert rounds["ours"] == [Round(0.02, 0.01)] * 4
    ratios = paired_ratios(rounds["ours"], rounds["theirs"])
    assert ratios.decode == pytest.approx(2.0) and ratios.prefill == pytest.approx(2.0)


def test_ratios_are_per_pair_so_a_slow_phase_of_the_host_cancels():
    # The host slows down 3x in the second half; each pair sees the same host, so the ratio holds.
    ours = [Round(1.0, 0.010), Round(1.0, 0.010), Round(3.0, 0.030), Round(3.0, 0.030), Round(3.0, 0.030)]
    theirs = [Round(1.5, 0.012), Round(1.5, 0.012), Round(4.5, 0.036), Round(4.5, 0.036), Round(4.5, 0.036)]
    ratios = paired_ratios(ours, theirs)
    assert ratios.decode == pytest.approx(1.2) and ratios.decode_range == pytest.approx((1.2, 1.2))
    assert ratios.prefill == pytest.approx(1.5)
    assert median_round(ours) == Round(3.0, 0.030)


def test_a_worker_that_dies_names_the_measurement(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("import sys\nsys.exit('no model here')\n")
    with pytest.raises(SystemExit, match=r"The llama.cpp measurement failed \(exit status 1\):\nno model here"):
        Worker("llama.cpp", [sys.executable, str(script)], dict(os.environ))


@pytest.mark.skipif(not hasattr(os, "kill"), reason="signals are POSIX")
def test_a_worker_that_crashes_says_which_signal(tmp_path):
    """A segfault in native code (llama.cpp's, say) prints nothing: the signal is all there is to say."""
    script = tmp_path / "crashing.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    with pytest.raises(SystemExit, match=r"The llama.cpp measurement failed \(killed by SIGSEGV\)"):
        Worker("llama.cpp", [sys.executable, str(script)], dict(os.environ))
