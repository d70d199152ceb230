"""Parsing a GGUF header (metadata and tensor directory) in one pass over the file's first bytes.
The gguf package's GGUFReader builds numpy views for every string of a 50k-token vocabulary and
takes seconds; this reads the same layout (GGUF v2/v3, little-endian) in well under one."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


class HeaderError(ValueError):
    """The header cannot be parsed; `truncated` when the bytes ran out."""

    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]
    """GGUF order (fastest-varying first): reversed from numpy's."""
    type_id: int
    offset: int
    """Bytes from the start of the file."""


@dataclass(frozen=True)
class Header:
    version: int
    metadata: dict[str, Any]
    """Strings as str, numbers as int/float/bool, arrays as lists."""
    tensors: list[TensorInfo]
    data_offset: int


class _Cursor:
    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer
        self.at = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.buffer):
            raise HeaderError(f"the header ends early (byte {self.at})", truncated=True)
        (value,) = struct.unpack_from(fmt, self.buffer, self.at)
        self.at += size
        return value

    def string(self) -> str:
        length = self.take("<Q")
        if self.at + length > len(self.buffer):
            raise HeaderError(f"a string runs past the end of the file (byte {self.at})", truncated=True)
        raw = bytes(self.buffer[self.at : self.at + length])
        self.at += length
        return raw.decode("utf-8", errors="replace")

    def value(self, type_id: int) -> Any:
        if type_id in _SCALARS:
            return self.take(_SCALARS[type_id])
        if type_id == _STRING:
            return self.string()
        if type_id == _ARRAY:
            item_type, count = self.take("<I"), self.take("<Q")
            if item_type in _SCALARS and item_type != 7:
                dtype = np.dtype(_SCALARS[item_type])
                end = self.at + count * dtype.itemsize
                if end > len(self.buffer):
                    raise HeaderError(f"an array runs past the end of the file (byte {self.at})", truncated=True)
                items = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.at).tolist()
                self.at = end
                return items
            return [self.value(item_type) for _ in range(count)]
        raise HeaderError(f"metadata value type {type_id} is unknown (byte {self.at})")


def parse_header(buffer: memoryview) -> Header:
    """The metadata and tensor directory of the GGUF whose bytes (or a prefix of them) are `buffer`."""
    cursor = _Cursor(buffer)
    if bytes(buffer[:4]) != b"GGUF":
        raise HeaderError("it does not start with 'GGUF'")
    cursor.at = 4
    version = cursor.take("<I")
    if version & 0xFFFF == 0:
        raise HeaderError("it is a big-endian GGUF, which Tandem does not read")
    if version not in (2, 3):
        raise HeaderError(f"GGUF version {version} is not supported (Tandem reads versions 2 and 3)")
    tensor_count, kv_count = cursor.take("<Q"), cursor.take("<Q")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.take("<I"))
    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(tensor_count):
        name = cursor.string()
        n_dims = cursor.take("<I")
        if n_dims > 8:
            raise HeaderError(f"tensor {name} claims {n_dims} dimensions")
        dims = tuple(cursor.take("<Q") for _ in range(n_dims))
        infos.append((name, dims, cursor.take("<I"), cursor.take("<Q")))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    if alignment <= 0 or alignment & (alignment - 1):
        raise HeaderError(f"general.alignment {alignment} is not a power of two")
    data_offset = -(-cursor.at // alignment) * alignment
    tensors = [TensorInfo(name, dims, type_id, data_offset + offset) for name, dims, type_id, offset in infos]
    return Header(version, metadata, tensors, data_offset)
