"""Opening a GGUF file: the `gguf` package's memory-mapped reader behind checks that turn a
truncated file, an unknown tensor type or a missing key into a ModelFileError naming the fix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelFileError

_REDOWNLOAD = "download or export the file again"
_UNKNOWN_TYPE = re.compile(r"(\d+)\)? is not a valid GGMLQuantizationType")
_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor as the file stores it."""

    name: str
    type_name: str
    """llama.cpp's name for its storage type: "F32", "Q4_1", "Q6_K"..."""
    shape: tuple[int, ...]
    """numpy order (rows, columns): GGUF lists dimensions the other way round."""
    data: np.ndarray
    """The raw memory-mapped data: float arrays for F32/F16, uint8 [rows, bytes per row] otherwise."""
    n_bytes: int


class GGUFFile:
    """A GGUF's metadata and tensors, read without loading the weights (they stay mapped)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).resolve()
        self._reader = _open_reader(self.path)
        self.tensors: dict[str, GGUFTensor] = {}
        size = self.path.stat().st_size
        for tensor in self._reader.tensors:
            end = int(tensor.data_offset) + int(tensor.n_bytes)
            if end > size:
                raise ModelFileError(
                    f"{self.path} is truncated: tensor {tensor.name} ends at byte {end} but the file has "
                    f"{size} bytes; {_REDOWNLOAD}."
                )
            self.tensors[tensor.name] = GGUFTensor(
                name=tensor.name,
                type_name=tensor.tensor_type.name,
                shape=tuple(int(d) for d in reversed(tensor.shape.tolist())),
                data=tensor.data,
                n_bytes=int(tensor.n_bytes),
            )

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value (str, number, bool or list), or `default` when the key is absent."""
        field = self._reader.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except (ValueError, IndexError, UnicodeDecodeError) as error:
            raise ModelFileError(f"{self.path}: metadata {key!r} cannot be read ({error}); {_REDOWNLOAD}.") from None

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


def _open_reader(path: Path) -> Any:
    from gguf import GGUFReader

    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        raise ModelFileError(f"{path} does not exist; check the path of the GGUF file.") from None
    except OSError as error:
        raise ModelFileError(f"{path} cannot be opened ({error}); check the path and its permissions.") from None
    if magic != _MAGIC:
        if len(magic) < 4:
            raise ModelFileError(f"{path} is empty or truncated; {_REDOWNLOAD}.")
        raise ModelFileError(f"{path} is not a GGUF file (it does not start with 'GGUF'); give a .gguf model file.")
    try:
        return GGUFReader(path)
    except ValueError as error:
        unknown = _UNKNOWN_TYPE.search(str(error))
        if unknown:
            raise ModelFileError(
                f"{path} stores a tensor in type {unknown.group(1)}, which is unknown to the installed gguf "
                "package; upgrade it (`pip install -U gguf`) or re-quantize the file to Q8_0 or Q4_K_M with "
                "llama.cpp's llama-quantize."
            ) from None
        raise ModelFileError(f"{path} cannot be read as GGUF ({error}): it is truncated or damaged; {_REDOWNLOAD}.") from None
    except (IndexError, OverflowError, KeyError, TypeError, MemoryError) as error:
        raise ModelFileError(f"{path} cannot be read as GGUF ({error}): it is truncated or damaged; {_REDOWNLOAD}.") from None
