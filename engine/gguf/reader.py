"""Opening a GGUF file: its header parsed (engine.gguf.header), its tensors memory-mapped with the
`gguf` package's type table, and a truncated file, an unknown tensor type or a missing key turned
into a ModelFileError naming the file and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelFileError
from engine.gguf.header import HeaderError, parse_header

_REDOWNLOAD = "download or export the file again"
_FLOAT_VIEWS = {"F32": np.float32, "F16": np.float16}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor as the file stores it."""

    name: str
    type_name: str
    """llama.cpp's name for its storage type: "F32", "Q4_1", "Q6_K"..."""
    shape: tuple[int, ...]
    """numpy order (rows, columns): GGUF lists dimensions the other way round."""
    data: np.ndarray
    """The memory-mapped data: float32/float16 arrays of `shape` for F32/F16, else uint8 with the
    last dimension in bytes ([rows, bytes per row]), as the gguf package's GGUFReader gives it."""
    n_bytes: int


class GGUFFile:
    """A GGUF's metadata and tensors, read without loading the weights (they stay mapped)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).resolve()
        self._map = _map(self.path)
        try:
            header = parse_header(self._map.data)
        except HeaderError as error:
            if str(error).startswith("it does not start"):
                raise ModelFileError(f"{self.path} is not a GGUF file ({error}); give a .gguf model file.") from None
            if error.truncated:
                raise ModelFileError(f"{self.path} is truncated: {error}; {_REDOWNLOAD}.") from None
            raise ModelFileError(f"{self.path} cannot be read as GGUF: {error}; {_REDOWNLOAD}.") from None
        self.version = header.version
        self.metadata = header.metadata
        self.tensors: dict[str, GGUFTensor] = {}
        for info in header.tensors:
            if info.name in self.tensors:
                raise ModelFileError(f"{self.path} holds the tensor {info.name} twice; {_REDOWNLOAD}.")
            self.tensors[info.name] = self._tensor(info.name, info.dims, info.type_id, info.offset)

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value (str, number, bool or list), or `default` when the key is absent."""
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        """A metadata value that must be there."""
        value = self.get(key)
        if value is None:
            raise ModelFileError(
                f"{self.path} lacks the metadata key {key!r}; the file is incomplete or was written by a "
                f"tool Tandem does not know. Re-export it with llama.cpp's convert_hf_to_gguf.py."
            )
        return value

    def tensor(self, name: str) -> GGUFTensor:
        """A tensor that must be there."""
        tensor = self.tensors.get(name)
        if tensor is None:
            raise ModelFileError(
                f"{self.path} lacks the tensor {name!r}; the file is incomplete or does not match its "
                f"metadata. {_REDOWNLOAD[0].upper()}{_REDOWNLOAD[1:]}."
            )
        return tensor

    @property
    def architecture(self) -> str:
        return str(self.require("general.architecture"))

    def _tensor(self, name: str, dims: tuple[int, ...], type_id: int, offset: int) -> GGUFTensor:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        try:
            qtype = GGMLQuantizationType(type_id)
        except ValueError:
            raise ModelFileError(
                f"{self.path} stores tensor {name} in type {type_id}, which is unknown to the installed gguf "
                "package; upgrade it (`pip install -U gguf`) or re-quantize the file to Q8_0 or Q4_K_M with "
                "llama.cpp's llama-quantize."
            ) from None
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        elements = int(np.prod(dims, dtype=np.int64)) if dims else 1
        if not dims or dims[0] % block_size:
            raise ModelFileError(
                f"{self.path}: tensor {name} has a shape {list(dims)} its type cannot hold; {_REDOWNLOAD}."
            )
        n_bytes = elements // block_size * type_size
        end = offset + n_bytes
        if end > self._map.size:
            raise ModelFileError(
                f"{self.path} is truncated: tensor {name} ends at byte {end} but the file has {self._map.size} "
                f"bytes; {_REDOWNLOAD}."
            )
        shape = tuple(int(d) for d in reversed(dims))
        raw = self._map[offset:end]
        if qtype.name in _FLOAT_VIEWS:
            data = raw.view(_FLOAT_VIEWS[qtype.name]).reshape(shape)
        else:
            data = raw.reshape(*shape[:-1], shape[-1] // block_size * type_size)
        return GGUFTensor(name=name, type_name=qtype.name, shape=shape, data=data, n_bytes=n_bytes)


def _map(path: Path) -> np.memmap:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelFileError(f"{path} does not exist; check the path of the GGUF file.") from None
    except OSError as error:
        raise ModelFileError(f"{path} cannot be opened ({error}); check the path and its permissions.") from None
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; give the path of a .gguf file.")
    if size < 4:
        raise ModelFileError(f"{path} is empty or truncated; {_REDOWNLOAD}.")
    try:
        return np.memmap(path, mode="r", dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path} cannot be opened ({error}); check the path and its permissions.") from None
