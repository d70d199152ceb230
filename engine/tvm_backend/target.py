"""Which device to compile for: the host CPU with its detected microarchitecture.

The kernels are CPU schedules, so the CPU is the target even where a GPU exists; the target's
string (with mcpu) is part of the compile cache key because a library is tied to it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import tvm


@dataclass(frozen=True)
class HostTarget:
    target: tvm.target.Target
    device: tvm.runtime.Device
    label: str
    """For people: e.g. "cpu (skylake-avx512, 2 threads)"."""

    @property
    def cache_key(self) -> str:
        return str(self.target)


def host_target() -> HostTarget:
    target = tvm.target.Target.from_device(tvm.cpu())
    mcpu = target.attrs.get("mcpu", "generic")
    threads = os.environ.get("TVM_NUM_THREADS") or str(os.cpu_count() or 1)
    return HostTarget(target, tvm.cpu(), f"cpu ({mcpu}, {threads} threads)")
