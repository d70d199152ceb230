"""TVM's runtime without TVM's compiler: tvm_ffi plus libtvm_runtime, enough to load a compiled
model library, run its relax VM and move arrays in and out. A warm start needs nothing more, and
`import tvm` (relax, the compiler, disco, and through tvm_ffi torch and ml_dtypes) costs seconds."""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

POOLED_ALLOCATOR = 2
"""relax.VirtualMachine's default memory allocator (its POOLED_ALLOCATOR)."""
_CPU = 1
"""kDLCPU: the VM computes shapes on the CPU, so it is always the last device it is given."""
_OPTIONAL_IMPORTS = ("torch", "ml_dtypes")
"""tvm_ffi imports these when they are installed, for conversions Tandem never asks of it: torch
(about 1.2 s; only the test extra installs it) and ml_dtypes (about 1 s: bfloat16 from numpy)."""


def _import_tvm_ffi() -> Any:
    """tvm_ffi with libtvm_runtime loaded. When TVM is not imported yet, the optional imports are
    hidden while tvm_ffi loads (it skips what raises ImportError), then visible again."""
    if "tvm_ffi" in sys.modules or "tvm" in sys.modules:
        import tvm_ffi

        _load_runtime_library()
        return tvm_ffi
    hidden = [name for name in _OPTIONAL_IMPORTS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # None makes `import name` raise ImportError
    try:
        import tvm_ffi
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    _load_runtime_library()
    return tvm_ffi


def _load_runtime_library() -> None:
    """libtvm_runtime, globally, as `import tvm` would load it (its VM, KV cache and allocators
    register their functions with tvm_ffi); loading it again is a no-op."""
    if "tvm" in sys.modules:
        return
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("apache-tvm is not installed")
    library = Path(spec.submodule_search_locations[0]) / "lib" / _runtime_library_name()
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)


def _runtime_library_name() -> str:
    if sys.platform == "darwin":
        return "libtvm_runtime.dylib"
    if sys.platform == "win32":
        return "tvm_runtime.dll"
    return "libtvm_runtime.so"


tvm_ffi = _import_tvm_ffi()


def cpu() -> Any:
    return tvm_ffi.device("cpu", 0)


def is_cpu(device: Any) -> bool:
    return device.dlpack_device_type() == _CPU


def global_func(name: str) -> Any:
    return tvm_ffi.get_global_func(name)


def shape(dims: Sequence[int]) -> Any:
    return tvm_ffi.Shape([int(dim) for dim in dims])


def load_vm(library: Path, device: Any) -> Any:
    """The relax VM of a compiled library, set up for `device` (and the CPU for shape code);
    vm[name] is an exported function."""
    executable = tvm_ffi.load_module(str(library))
    vm = executable["vm_load_executable"]()
    devices = [device] if is_cpu(device) else [device, cpu()]
    args: list[int] = []
    for each in devices:
        args += [each.dlpack_device_type(), each.index, POOLED_ALLOCATOR]
    vm["vm_initialization"](*args)
    return vm


def wrap(array: np.ndarray) -> Any:
    """A CPU tensor sharing `array`'s memory (the tensor keeps it alive)."""
    return tvm_ffi.from_dlpack(array)


def upload(array: np.ndarray, device: Any) -> Any:
    """A copy of `array` on `device`."""
    array = np.ascontiguousarray(array)
    tensor = global_func("runtime.TVMTensorAllocWithScope")(
        shape(array.shape), tvm_ffi.dtype(str(array.dtype)), device, None
    )
    global_func("runtime.TVMTensorCopyFromBytes")(tensor, array.ctypes.data_as(ctypes.c_void_p), array.nbytes)
    return tensor


def download(tensor: Any) -> np.ndarray:
    """A numpy copy of a tensor (float32 logits, from any device)."""
    result = np.empty(tuple(tensor.shape), dtype=str(tensor.dtype))
    global_func("runtime.TVMTensorCopyToBytes")(tensor, result.ctypes.data_as(ctypes.c_void_p), result.nbytes)
    return result
