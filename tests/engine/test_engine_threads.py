"""How many threads the CPU kernels run on (engine/tvm_backend/threads.py): one per physical core
read from a laid-out copy of Linux's topology files, the user's TVM_NUM_THREADS first, and a
fresh process whose engine runs TVM's thread pool on that many threads (TVM's own default
halves the logical CPUs on x86, which left a 2-core VM with one thread)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import EngineError
from engine.tvm_backend.threads import THREADS_ENV, cpu_threads, physical_cores, use_cpu_threads

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux's CPU topology only")


def _topology(root: Path, core_of: dict[int, int]) -> Path:
    for cpu, core in core_of.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text("0\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_hardware_threads_of_one_core_count_once(tmp_path):
    allowed = sorted(os.sched_getaffinity(0))
    as_pairs = _topology(tmp_path / "smt", {cpu: index // 2 for index, cpu in enumerate(allowed)})
    assert physical_cores(as_pairs) == (len(allowed) + 1) // 2
    as_cores = _topology(tmp_path / "cores", {cpu: index for index, cpu in enumerate(allowed)})
    assert physical_cores(as_cores) == len(allowed)
    assert physical_cores(tmp_path / "missing") is None  # unreadable: TVM's default stands


def test_the_users_setting_wins_and_junk_is_refused(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert cpu_threads() == use_cpu_threads() == 3
    for junk in ("many", "0", "-2"):
        monkeypatch.setenv(THREADS_ENV, junk)
        with pytest.raises(EngineError, match=f"{THREADS_ENV}=.* is not a number of threads"):
            cpu_threads()


CHILD = """
import json, sys
from engine.loader import open_engine
from engine.tvm_backend import ffi_runtime
engine = open_engine(sys.argv[1], backend="tvm")
engine.session.reset()
engine.session.prefill([5, 17, 42])
print(json.dumps({"threads": ffi_runtime.global_func("runtime.NumThreads")(), "device": engine.info.device}))
"""


def test_a_fresh_process_runs_one_thread_per_core(tiny_mlc_model):
    cores = physical_cores()
    if cores is None:
        pytest.skip("this machine's CPU topology cannot be read")
    env = {key: value for key, value in os.environ.items() if key != THREADS_ENV}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["TANDEM_DEVICE"] = "cpu"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny_mlc_model("q4f32_1"))],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    opened = json.loads(child.stdout.strip().splitlines()[-1])
    assert opened["threads"] == cores
    assert f"{cores} threads" in opened["device"]
