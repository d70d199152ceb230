"""The warm-start index: which cached library and weight entry a model last opened with on this
host, so the next open maps them with TVM's runtime alone, without importing the compiler or
asking LLVM for the host's target (together seconds).

A record is valid while everything that chose them is unchanged: the model's files (and a GGUF
it runs in place from elsewhere: its size, times and inode, so it is not re-read), the host's
CPU and GPU device nodes, the settings in ENV_SETTINGS, the
installed TVM, Tandem's engine sources and its weight layout; all of these are hashed into its key. Only CPU opens
are recorded (a GPU open needs the full TVM to find its device). One record per model folder and
asked-for device, replaced in place."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WARM_DIR = "warm"
FORMAT = 1
ENV_SETTINGS = (
    "TANDEM_DEVICE", "TANDEM_CPU_MATMUL", "TANDEM_INT8_ISA", "TANDEM_DECODE_FUSION", "TANDEM_KV_CACHE", "TVM_NUM_THREADS"
)
"""The settings a compiled library or its label depend on (target.py reads them)."""
_GPU_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dri")
"""Their appearing (a driver installed) may change what device "auto" picks."""
_ENGINE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class WarmStart:
    library_entry: Path
    """A compile cache entry (compiler.read_entry reads it)."""
    weights_entry: Path
    weights_key: str
    """A weight cache entry and its key (weight_cache.read_entry reads them)."""
    label: str
    """The device label the full open gave (HostTarget.label)."""


def find(model_dir: Path, device: str | None, cache_root: Path, sources: Sequence[Path] = ()) -> WarmStart | None:
    """The warm start recorded for this model, device and host, or None (never recorded, or
    something it depends on changed). `sources`: weight files outside model_dir it runs."""
    path = _record_path(model_dir, device, cache_root)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("key") != warm_key(model_dir, device, sources):
            return None
        return WarmStart(
            Path(record["library_entry"]),
            Path(record["weights_entry"]),
            str(record["weights_key"]),
            str(record["label"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(
    model_dir: Path, device: str | None, cache_root: Path, start: WarmStart, sources: Sequence[Path] = ()
) -> None:
    """Record `start` for the next open (best effort: a read-only cache just stays cold)."""
    key = warm_key(model_dir, device, sources)
    if key is None:
        return
    record = {
        "format": FORMAT,
        "key": key,
        "model_dir": str(model_dir.resolve()),
        "library_entry": str(start.library_entry),
        "weights_entry": str(start.weights_entry),
        "weights_key": start.weights_key,
        "label": start.label,
    }
    path = _record_path(model_dir, device, cache_root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staging = tempfile.mkstemp(prefix=path.stem + ".", suffix=".partial", dir=path.parent)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(record, file)
        os.replace(staging, path)
    except OSError:
        return


def forget(model_dir: Path, device: str | None, cache_root: Path) -> None:
    """Drop the record (its entries failed to load): the next open takes the full path."""
    try:
        _record_path(model_dir, device, cache_root).unlink()
    except OSError:
        pass


def warm_key(model_dir: Path, device: str | None, sources: Sequence[Path] = ()) -> str | None:
    """Everything a warm start depends on, hashed; None where the host cannot be identified or
    a file cannot be stat'ed."""
    host = _host_fingerprint()
    if host is None:
        return None
    from engine.tvm_backend import weight_cache

    layout = weight_cache.REPACK_LAYOUT  # read where weights_key reads it
    digest = hashlib.sha256(f"{FORMAT}\0{host}\0{_wanted_device(device)}\0{layout}\0".encode())
    for name in ENV_SETTINGS:
        digest.update(f"{name}={os.environ.get(name, '')}\0".encode())
    digest.update(f"cpus={os.cpu_count()}\0".encode())
    for node in _GPU_NODES:
        digest.update(f"{node}:{os.path.exists(node)}\0".encode())
    for package in ("tvm", "tvm_ffi"):
        digest.update(_installed_libraries(package).encode())
    _add_files(digest, sorted(_ENGINE_ROOT.rglob("*.py")), contents=True)
    try:
        _add_files(digest, sorted(p for p in Path(model_dir).iterdir() if p.is_file()), contents=False)
        _add_files(digest, [Path(source).resolve() for source in sources], contents=False)
    except OSError:
        return None
    return digest.hexdigest()[:32]


def _wanted_device(device: str | None) -> str:
    return (device or os.environ.get("TANDEM_DEVICE") or "auto").strip().lower()


def _record_path(model_dir: Path, device: str | None, cache_root: Path) -> Path:
    name = hashlib.sha256(f"{Path(model_dir).resolve()}\0{_wanted_device(device)}".encode()).hexdigest()[:24]
    return cache_root / WARM_DIR / f"{name}.json"


def _add_files(digest, paths: list[Path], contents: bool) -> None:
    """Each file's name and either its bytes (small sources) or its size, mtime, ctime and
    inode (model weights: a rewrite changes one of them)."""
    for path in paths:
        digest.update(str(path).encode() + b"\0")
        if contents:
            digest.update(path.read_bytes())
        else:
            stat = path.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}\0".encode())


def _installed_libraries(package: str) -> str:
    """The native libraries of an installed package, by name, size and mtime: a reinstall or an
    upgrade changes them. Found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return f"{package}:absent"
    folder = Path(spec.submodule_search_locations[0]) / "lib"
    entries = []
    try:
        for path in sorted(folder.iterdir()):
            stat = path.stat()
            entries.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    except OSError:
        pass
    return f"{package}:{folder}:{','.join(entries)}"


def _host_fingerprint() -> str | None:
    """The CPU model and its feature flags (what the library was compiled for). Linux reads
    /proc/cpuinfo; elsewhere there is no cheap equivalent, so no warm start is recorded."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    wanted = ("model name", "flags", "Features", "CPU implementer", "CPU part", "vendor_id")
    seen: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name in wanted and name not in seen:
            seen[name] = value.strip()
    if not seen:
        return None
    return json.dumps(seen, sort_keys=True)
