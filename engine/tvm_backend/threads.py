"""How many threads the tvm backend's CPU kernels run on: TVM_NUM_THREADS when the user sets it,
else one per physical core this process may run on.

TVM's own default halves the count of logical CPUs on x86, on the assumption that every core runs
two hardware threads. On a machine without SMT (a cloud VM's vCPUs are often whole cores) that
left half the cores idle: on a 2-core VM TVM ran one thread, and SmolLM2's decode went from 95 to
191 tok/s with two. TVM's thread pool reads TVM_NUM_THREADS once, when its first parallel kernel
runs, so use_cpu_threads() sets it before the engine runs anything."""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import EngineError

THREADS_ENV = "TVM_NUM_THREADS"
_TOPOLOGY = Path("/sys/devices/system/cpu")


def use_cpu_threads() -> int | None:
    """Sets TVM_NUM_THREADS to cpu_threads() unless the user set it; the count, or None where
    it is unknown (then TVM's own default stands)."""
    threads = cpu_threads()
    if threads is not None:
        os.environ[THREADS_ENV] = str(threads)
    return threads


def cpu_threads() -> int | None:
    """$TVM_NUM_THREADS, else physical_cores()."""
    wanted = os.environ.get(THREADS_ENV, "").strip()
    if not wanted:
        return physical_cores()
    if not wanted.isdigit() or int(wanted) < 1:
        raise EngineError(f"{THREADS_ENV}={wanted!r} is not a number of threads; set it to 1 or more, or unset it.")
    return int(wanted)


def physical_cores(topology: Path = _TOPOLOGY) -> int | None:
    """Distinct cores among the CPUs this process may run on, from Linux's topology files
    (`topology` is their folder); None elsewhere or when they cannot be read."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = set()
    for cpu in os.sched_getaffinity(0):
        folder = topology / f"cpu{cpu}" / "topology"
        try:
            cores.add(((folder / "physical_package_id").read_text().strip(), (folder / "core_id").read_text().strip()))
        except OSError:
            return None
    return len(cores) or None
