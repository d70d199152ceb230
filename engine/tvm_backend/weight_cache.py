"""The model's weights on the device (from an MLC tensor cache, or from the GGUF file a "gguf"
model directory runs), repacked once and cached in one file per (weights, weight layout,
target). On the CPU the tensors are the cache file itself, mapped copy-on-write: a reload
copies nothing and processes running the same model share one copy in the page cache.

The shards are md5-checked when an entry is built; a hit trusts them because the tensor-cache
index and every shard's (or the GGUF's) size, mtime, ctime and inode are what they were then.
An entry is [magic, header length, header JSON, arrays at 64-byte offsets, end marker + the
header's sha256]; a wrong size, marker or digest means a torn or foreign file, which is dropped
and rebuilt. Entries are written aside and renamed into place, never changed in place, which is
what makes mapping them safe."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from engine.artifact import find_tensor_cache, load_params
from engine.block_codes import BLOCK_CODES_LAYOUT, BlockArrays
from engine.config import ChatConfig, read_json
from engine.tvm_backend import ffi_runtime
from engine.tvm_backend.compiler import ParamSpec
from engine.tvm_backend.gguf_weights import GGUFWeights
from engine.tvm_backend.repack import REPACK_LAYOUT, repacked_params

if TYPE_CHECKING:
    from engine.tvm_backend.target import HostTarget

WEIGHTS_DIR = "weights"
ENTRY_SUFFIX = ".params"
_STAGING_SUFFIX = ".partial"
_MAGIC = b"TANDEMW1"
_END_MARKER = b"TANDEMWE"
_PREFIX = struct.Struct("<8sQ")  # magic, header length
_TRAILER_BYTES = len(_END_MARKER) + hashlib.sha256().digest_size
_ALIGN = 64
"""TVM requires tensors 64-byte aligned; the mapping itself starts on a page."""
_MAX_HEADER_BYTES = 64 * 1024 * 1024
_ABANDONED_AFTER_S = 24 * 3600.0
"""A staging file this old belongs to a process that died while writing it."""


@dataclass(frozen=True)
class LoadedWeights:
    tensors: list[Any]
    """TVM tensors, in the order of the compiled library's parameter list."""
    cache_hit: bool
    """True when the cache had them; False when they were read, verified and repacked now."""
    cache_note: str | None = None
    """Why they could not be cached this time (a read-only folder, a full disk), else None."""
    entry: Path | None = None
    key: str | None = None
    """The cache entry they were mapped from and its key (read_entry takes both), when cached."""


def load_weights(
    model_dir: Path,
    chat_config: ChatConfig,
    specs: Sequence[ParamSpec],
    target: HostTarget,
    cache_root: Path,
    gguf: GGUFWeights | None = None,
) -> LoadedWeights:
    """The parameters `specs` names on the target's device: from the cache when the model's
    weights are unchanged since the entry was built, else read, md5-verified and repacked from
    the model directory (or from `gguf`, the GGUF file a "gguf" directory runs), and cached when
    the cache folder can be written."""
    tied = chat_config.model_config.tie_word_embeddings
    if gguf is not None:
        key = gguf_weights_key(gguf.path, chat_config, specs, target)
        read: Callable[[], Mapping[str, np.ndarray]] = lambda: BlockArrays(gguf.tensors)  # noqa: E731
    else:
        key = weights_key(model_dir, chat_config, specs, target)
        read = lambda: load_params(model_dir, chat_config)  # noqa: E731  (md5-checked)
    if key is None:  # a file cannot be stat'ed: reading the model says which and why
        return LoadedWeights(_uploaded(read(), specs, tied, target), False, "a weights file could not be stat'ed")
    group = cache_root / WEIGHTS_DIR / _group_name(model_dir, target)
    entry = group / f"{key}{ENTRY_SUFFIX}"
    tensors = read_entry(entry, key, specs, target.device)
    if tensors is not None:
        return LoadedWeights(tensors, cache_hit=True, entry=entry, key=key)
    params = read()  # what the entry vouches for
    note = write_entry(entry, _header(key, model_dir, specs), repacked_params(params, specs, tied))
    if note is None:
        _prune(cache_root / WEIGHTS_DIR, keep=entry)
        tensors = read_entry(entry, key, specs, target.device)
        if tensors is not None:
            return LoadedWeights(tensors, cache_hit=False, entry=entry, key=key)
        note = f"the weight cache entry {entry} could not be read back"
    return LoadedWeights(_uploaded(params, specs, tied, target), False, note)


def _uploaded(
    params: Mapping[str, np.ndarray], specs: Sequence[ParamSpec], tied: bool, target: HostTarget
) -> list[Any]:
    """Repacked one array at a time, so only one repacked copy is alive outside the device."""
    return [ffi_runtime.upload(array, target.device) for array in repacked_params(params, specs, tied)]


def _identity(chat_config: ChatConfig, specs: Sequence[ParamSpec], target: HostTarget) -> bytes:
    identity = {
        "layout": REPACK_LAYOUT,
        "target": target.cache_key,
        "quantization": chat_config.quantization,
        "model_config": chat_config.model_config.to_dict(),
        "params": [[name, list(shape), dtype] for name, shape, dtype in specs],
    }
    return json.dumps(identity, sort_keys=True).encode()


def _file_stamp(path: Path, label: str) -> bytes:
    stat = path.stat()
    # ctime and the inode change with any rewrite, even one that restores the mtime.
    return f"{label}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}\n".encode()


def weights_key(
    model_dir: Path, chat_config: ChatConfig, specs: Sequence[ParamSpec], target: HostTarget
) -> str | None:
    """What the repacked weights depend on, hashed; None when a shard cannot be stat'ed."""
    index_path = find_tensor_cache(model_dir)
    index_bytes = index_path.read_bytes()
    index = read_json(index_path, what="an MLC model directory")
    digest = hashlib.sha256(_identity(chat_config, specs, target))
    digest.update(index_bytes)
    shards = index.get("records") if isinstance(index, dict) else None
    for shard in shards if isinstance(shards, list) else []:
        data_path = str(shard.get("dataPath", "")) if isinstance(shard, dict) else ""
        try:
            digest.update(_file_stamp(model_dir / data_path, data_path))
        except OSError:
            return None
    return digest.hexdigest()[:32]


def gguf_weights_key(
    gguf_path: Path, chat_config: ChatConfig, specs: Sequence[ParamSpec], target: HostTarget
) -> str | None:
    """What weights repacked from a GGUF file depend on, hashed (the specs carry each tensor's
    kind); None when the file cannot be stat'ed. A GGUF is not md5-checked, so a changed file
    is noticed by its size, times and inode."""
    digest = hashlib.sha256(_identity(chat_config, specs, target))
    digest.update(BLOCK_CODES_LAYOUT.encode())
    try:
        digest.update(_file_stamp(gguf_path, str(gguf_path.resolve())))
    except OSError:
        return None
    return digest.hexdigest()[:32]


def read_entry(
    entry: Path, key: str, specs: Sequence[ParamSpec], device: Any
) -> list[Any] | None:
    """The entry's arrays on the device, or None when it is absent; a damaged entry (or one
    whose header does not describe `specs` under `key`) is deleted too."""
    try:
        file = open(entry, "rb")
    except OSError:
        return None
    with file:
        header = _checked_header(file, key, specs)
        try:
            mapped = None if header is None else mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):
            mapped = None
    if header is None or mapped is None:
        _remove(entry)
        return None
    data = np.frombuffer(mapped, dtype=np.uint8)
    views = [
        data[offset : offset + nbytes].view(dtype).reshape(shape)
        for _, shape, dtype, offset, nbytes in header["arrays"]
    ]
    if ffi_runtime.is_cpu(device):
        return [ffi_runtime.wrap(view) for view in views]  # the tensors keep the mapping alive
    return [ffi_runtime.upload(view, device) for view in views]


def write_entry(entry: Path, header: dict[str, Any], arrays: Iterable[np.ndarray]) -> str | None:
    """Write the arrays as `entry` (aside, then renamed into place); None when done, else why
    not. Whatever stops it midway (a full disk, a bad tensor), no partial file is left."""
    raw = json.dumps(header).encode()
    staging: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix=entry.stem + ".", suffix=_STAGING_SUFFIX, dir=entry.parent)
        staging = Path(name)
        with os.fdopen(descriptor, "wb") as file:
            file.write(_PREFIX.pack(_MAGIC, len(raw)) + raw)
            for array, (_, _, _, offset, _) in zip(arrays, header["arrays"], strict=True):
                file.seek(offset)
                file.write(np.ascontiguousarray(array).data.cast("B"))
            file.seek(header["size"] - _TRAILER_BYTES)
            file.write(_END_MARKER + hashlib.sha256(raw).digest())
        os.replace(staging, entry)
        staging = None
    except OSError as error:
        return f"the weight cache {entry.parent} cannot be written ({error.strerror or error})"
    finally:
        if staging is not None:
            _remove(staging)
    return None


def _checked_header(file: BinaryIO, key: str, specs: Sequence[ParamSpec]) -> dict[str, Any] | None:
    try:
        size = os.fstat(file.fileno()).st_size
        magic, header_bytes = _PREFIX.unpack(_read_exactly(file, _PREFIX.size))
        if magic != _MAGIC or header_bytes > min(size, _MAX_HEADER_BYTES):
            return None
        raw = _read_exactly(file, header_bytes)
        file.seek(max(size - _TRAILER_BYTES, 0))
        if _read_exactly(file, _TRAILER_BYTES) != _END_MARKER + hashlib.sha256(raw).digest():
            return None
        header = json.loads(raw)
    except (OSError, ValueError, struct.error):
        return None
    wanted = [[name, list(shape), dtype] for name, shape, dtype in specs]
    described = [array[:3] for array in header.get("arrays", [])]
    if header.get("key") != key or described != wanted or header.get("size") != size:
        return None
    return header


def _read_exactly(file: BinaryIO, count: int) -> bytes:
    data = file.read(count)
    if len(data) != count:
        raise ValueError("the file ends early")
    return data


def _header(key: str, model_dir: Path, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    sizes = [int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for _, shape, dtype in specs]
    data_start = _ALIGN
    while True:  # the header holds the offsets, and its own length decides where they start
        arrays: list[list[Any]] = []  # [name, shape, dtype, offset, nbytes], as the header stores them
        offset = data_start
        for (name, shape, dtype), nbytes in zip(specs, sizes):
            arrays.append([name, list(shape), dtype, offset, nbytes])
            offset = _aligned(offset + nbytes)
        end = arrays[-1][3] + arrays[-1][4] if arrays else data_start
        header = {"key": key, "model_dir": str(model_dir.resolve()), "arrays": arrays, "size": end + _TRAILER_BYTES}
        needed = _aligned(_PREFIX.size + len(json.dumps(header).encode()))
        if needed <= data_start:
            return header
        data_start = needed


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _group_name(model_dir: Path, target: HostTarget) -> str:
    """One folder per model directory and device kind: a new entry there replaces the others."""
    return hashlib.sha256(f"{model_dir.resolve()}\0{target.kind}".encode()).hexdigest()[:16]


def _prune(weights_root: Path, keep: Path) -> None:
    """Drop the other entries of `keep`'s model (older weights, layouts or targets of the same
    device kind), the entries of model directories that no longer exist, and abandoned staging
    files. A process still using a dropped entry keeps its mapping."""
    for path in keep.parent.iterdir():
        if path != keep and (path.suffix == ENTRY_SUFFIX or _abandoned(path)):
            _remove(path)
    for group in weights_root.iterdir():
        if group == keep.parent or not group.is_dir():
            continue
        for path in group.iterdir():
            if _abandoned(path) or (path.suffix == ENTRY_SUFFIX and _orphaned(path)):
                _remove(path)
        try:
            group.rmdir()  # only when empty
        except OSError:
            pass


def _abandoned(path: Path) -> bool:
    try:
        return path.suffix == _STAGING_SUFFIX and time.time() - path.stat().st_mtime > _ABANDONED_AFTER_S
    except OSError:
        return False


def _orphaned(entry: Path) -> bool:
    """True when the entry's model directory is gone (or the entry is unreadable)."""
    try:
        with open(entry, "rb") as file:
            magic, header_bytes = _PREFIX.unpack(_read_exactly(file, _PREFIX.size))
            if magic != _MAGIC or header_bytes > _MAX_HEADER_BYTES:
                return True
            model_dir = json.loads(_read_exactly(file, header_bytes)).get("model_dir")
    except (OSError, ValueError, struct.error):
        return True
    return not (isinstance(model_dir, str) and Path(model_dir).is_dir())


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
