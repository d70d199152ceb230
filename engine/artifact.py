"""MLC tensor caches on disk: tensor-cache.json (or the older ndarray-cache.json) plus raw
params_shard_N.bin files, written and read with md5 checks and bf16-encoded float32 records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import ChatConfig, read_json
from engine.errors import ModelFileError
from engine.layout import stored_specs
from engine.quantization import QUANTIZATIONS

TENSOR_CACHE_FILE = "tensor-cache.json"
LEGACY_TENSOR_CACHE_FILE = "ndarray-cache.json"
SHARD_CAP_BYTES = 32 * 1024 * 1024
BF16_FORMAT = "f32-to-bf16"
RAW_FORMAT = "raw"
_DTYPES = ("float32", "float16", "float64", "uint32", "int32", "uint16", "int16", "uint8", "int8", "int64")
_REFETCH = "Re-download the model or convert it again with `tandem models convert`."


def write_tensor_cache(
    out_dir: Path | str,
    params: Iterable[tuple[str, np.ndarray]],
    *,
    float32_as_bf16: bool = True,
    shard_cap_bytes: int = SHARD_CAP_BYTES,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write arrays into shards of about `shard_cap_bytes` and index them in tensor-cache.json.

    Like MLC's converter, float32 arrays are stored as bf16 when `float32_as_bf16` (every
    record then carries the format "f32-to-bf16"; only float32 ones are actually encoded)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_format = BF16_FORMAT if float32_as_bf16 else RAW_FORMAT
    shards: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    pending_data = bytearray()
    total_bytes = 0
    count = 0

    def commit() -> None:
        data_path = f"params_shard_{len(shards)}.bin"
        (out / data_path).write_bytes(pending_data)
        shards.append(
            {
                "dataPath": data_path,
                "format": "raw-shard",
                "nbytes": len(pending_data),
                "records": list(pending),
                "md5sum": hashlib.md5(pending_data).hexdigest(),
            }
        )
        pending.clear()
        pending_data.clear()

    for name, array in params:
        array = np.ascontiguousarray(array)
        dtype = array.dtype.name
        if dtype not in _DTYPES:
            raise ValueError(f"cannot store {name}: dtype {dtype} has no tensor-cache encoding")
        if float32_as_bf16 and dtype == "float32":
            data = encode_bf16(array).tobytes()
        else:
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        if pending and len(pending_data) + len(data) > shard_cap_bytes:
            commit()
        pending.append(
            {
                "name": name,
                "shape": list(array.shape),
                "dtype": dtype,
                "format": record_format,
                "nbytes": len(data),
                "byteOffset": len(pending_data),
            }
        )
        pending_data += data
        total_bytes += array.nbytes
        count += 1
    if pending:
        commit()
    meta = {"ParamSize": count, "ParamBytes": total_bytes, **(metadata or {})}
    index = out / TENSOR_CACHE_FILE
    index.write_text(json.dumps({"metadata": meta, "records": shards}, indent=2) + "\n", encoding="utf-8")
    return index


def read_tensor_cache(model_dir: Path | str, *, verify_md5: bool = True) -> dict[str, np.ndarray]:
    """Every array in the directory's tensor cache, by name (float32 records decoded from bf16)."""
    model_dir = Path(model_dir)
    index_path = find_tensor_cache(model_dir)
    index = read_json(index_path, what="an MLC model directory")
    shards = index.get("records")
    if not isinstance(shards, list):
        raise ModelFileError(f"{index_path} has no \"records\" list. {_REFETCH}")
    params: dict[str, np.ndarray] = {}
    for shard in shards:
        params.update(_read_shard(model_dir, index_path, shard, verify_md5))
    return params


def find_tensor_cache(model_dir: Path) -> Path:
    for name in (TENSOR_CACHE_FILE, LEGACY_TENSOR_CACHE_FILE):
        if (model_dir / name).is_file():
            return model_dir / name
    raise ModelFileError(
        f"{model_dir / TENSOR_CACHE_FILE} is missing (nor is there an {LEGACY_TENSOR_CACHE_FILE}): "
        f"the directory holds no weights. {_REFETCH}"
    )


def load_params(
    model_dir: Path | str, chat_config: ChatConfig, *, verify_md5: bool = True
) -> dict[str, np.ndarray]:
    """The model's parameters under MLC's names, checked against its config and quantization."""
    params = read_tensor_cache(model_dir, verify_md5=verify_md5)
    check_params(params, chat_config, source=str(find_tensor_cache(Path(model_dir))))
    return params


def check_params(params: Mapping[str, np.ndarray], chat_config: ChatConfig, source: str) -> None:
    """Raise ModelFileError unless every expected array is present with its shape and dtype."""
    expected = stored_specs(chat_config.model_config, QUANTIZATIONS[chat_config.quantization])
    advice = f"It does not match mlc-chat-config.json ({chat_config.quantization}); {_REFETCH}"
    missing = [name for name in expected if name not in params]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ModelFileError(f"{source} lacks {', '.join(missing[:3])}{more}. {advice}")
    for name, spec in expected.items():
        array = params[name]
        if tuple(array.shape) != spec.shape or array.dtype.name != spec.dtype:
            raise ModelFileError(
                f"{source}: {name} is {array.dtype.name}{list(array.shape)}, expected "
                f"{spec.dtype}{list(spec.shape)}. {advice}"
            )


def encode_bf16(array: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16): round to nearest even; values beyond bf16's range truncate."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    limit = np.uint32(0x7F7F0000).view(np.float32)
    values = bits.view(np.float32)
    in_range = (values < limit) & (values > -limit)
    bias = np.where(in_range, ((bits >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF), np.uint32(0))
    return ((bits + bias.astype(np.uint32)) >> np.uint32(16)).astype(np.uint16)


def decode_bf16(bits: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) -> float32."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _read_shard(model_dir: Path, index_path: Path, shard: Mapping[str, Any], verify_md5: bool) -> dict[str, np.ndarray]:
    data_path = model_dir / str(shard.get("dataPath", ""))
    expected_bytes = int(shard.get("nbytes", -1))
    try:
        data = bytearray(data_path.read_bytes())
    except FileNotFoundError:
        raise ModelFileError(f"{data_path} is missing (listed in {index_path.name}). {_REFETCH}") from None
    except OSError as error:
        raise ModelFileError(f"{data_path} cannot be read ({error.strerror}). {_REFETCH}") from None
    if len(data) < expected_bytes:
        raise ModelFileError(f"{data_path} is truncated: {len(data)} of {expected_bytes} bytes. {_REFETCH}")
    if len(data) > expected_bytes >= 0:
        raise ModelFileError(f"{data_path} is {len(data)} bytes, {expected_bytes} expected. {_REFETCH}")
    if verify_md5 and shard.get("md5sum") and hashlib.md5(data).hexdigest() != shard["md5sum"]:
        raise ModelFileError(f"{data_path} is corrupt: its md5 does not match {index_path.name}. {_REFETCH}")
    return {record["name"]: _decode_record(data, record, data_path) for record in shard.get("records", [])}


def _decode_record(data: bytearray, record: Mapping[str, Any], data_path: Path) -> np.ndarray:
    name, dtype, shape = record.get("name"), record.get("dtype"), tuple(record.get("shape", ()))
    if dtype not in _DTYPES:
        raise ModelFileError(
            f"{data_path}: {name} has dtype {dtype!r}, which Tandem cannot load "
            f"(it reads {', '.join(_DTYPES)}). Convert the model with `tandem models convert`."
        )
    offset, nbytes = int(record.get("byteOffset", 0)), int(record.get("nbytes", 0))
    bf16 = record.get("format") == BF16_FORMAT and dtype == "float32"
    item_size = 2 if bf16 else np.dtype(dtype).itemsize
    if nbytes != int(np.prod(shape, dtype=np.int64)) * item_size or offset + nbytes > len(data):
        raise ModelFileError(f"{data_path}: the record of {name} does not fit its shape {list(shape)}. {_REFETCH}")
    if bf16:
        return decode_bf16(np.frombuffer(data, dtype="<u2", count=nbytes // 2, offset=offset)).reshape(shape)
    little_endian = np.dtype(dtype).newbyteorder("<")
    array = np.frombuffer(data, dtype=little_endian, count=nbytes // item_size, offset=offset).reshape(shape)
    return array.astype(dtype, copy=False)
