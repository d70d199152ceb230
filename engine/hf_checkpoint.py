"""A Hugging Face checkpoint folder, read without torch: config.json, the *.safetensors tensors
(bf16 included, memory-mapped) and the tokenizer's settings."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import ModelConfig, model_config_from_hf, read_json
from engine.errors import ModelFileError

_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}  # fmt: skip


@dataclass(frozen=True)
class _TensorLocation:
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class HFCheckpoint:
    """One checkpoint folder. Tensors are read on demand, one at a time, as float32."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ModelFileError(f"{self.folder} is not a folder; give the folder of a Hugging Face checkpoint.")
        self.config_path = self.folder / "config.json"
        self.config: dict[str, Any] = read_json(self.config_path, what="a Hugging Face checkpoint folder")
        self.model_config: ModelConfig = model_config_from_hf(self.config, source=str(self.config_path))
        self._tensors = self._index_safetensors()

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def has(self, name: str) -> bool:
        return name in self._tensors

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as float32 (bf16 and fp16 are widened exactly)."""
        location = self._tensors.get(name)
        if location is None:
            raise ModelFileError(f"{self.folder}: no safetensors file holds {name}; the checkpoint is incomplete.")
        count = int(np.prod(location.shape, dtype=np.int64))
        raw = np.memmap(location.path, dtype=location.dtype, mode="r", offset=location.start, shape=(count,))
        if location.end - location.start != raw.nbytes:
            raise ModelFileError(f"{location.path}: {name} does not fit its shape; re-download the file.")
        if location.dtype == "<u2":  # bf16: the upper half of a float32
            values = (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)
        else:
            values = raw.astype(np.float32)
        return values.reshape(location.shape)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._tensors[name].shape

    def optional_json(self, name: str) -> dict[str, Any]:
        path = self.folder / name
        return read_json(path, what=str(self.folder)) if path.is_file() else {}

    def chat_template_text(self) -> str:
        """The tokenizer's Jinja chat template (tokenizer_config.json or chat_template.jinja), or ""."""
        jinja = self.folder / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        template = self.optional_json("tokenizer_config.json").get("chat_template") or ""
        if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}]
            template = " ".join(str(entry.get("template", "")) for entry in template if isinstance(entry, Mapping))
        return str(template)

    def special_token(self, key: str) -> str | None:
        """A special token's text from tokenizer_config.json ("bos_token", "eos_token", "pad_token")."""
        value = self.optional_json("tokenizer_config.json").get(key)
        if isinstance(value, Mapping):
            value = value.get("content")
        return value if isinstance(value, str) else None

    def _index_safetensors(self) -> dict[str, _TensorLocation]:
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            found = " (pytorch_model.bin is not supported)" if (self.folder / "pytorch_model.bin").exists() else ""
            raise ModelFileError(
                f"{self.folder} has no *.safetensors weights{found}; download the safetensors version of the model."
            )
        index: dict[str, _TensorLocation] = {}
        for path in files:
            index.update(_read_safetensors_header(path))
        return index


def _read_safetensors_header(path: Path) -> dict[str, _TensorLocation]:
    try:
        with path.open("rb") as file:
            (header_size,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(header_size))
    except (OSError, struct.error, ValueError) as error:
        raise ModelFileError(f"{path} is not a readable safetensors file ({error}); re-download it.") from None
    data_start = 8 + header_size
    size = path.stat().st_size
    locations: dict[str, _TensorLocation] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise ModelFileError(f"{path}: {name} has dtype {entry.get('dtype')}, which Tandem cannot convert.")
        start, end = entry["data_offsets"]
        if data_start + end > size:
            raise ModelFileError(f"{path} is truncated ({name} runs past its end); re-download it.")
        locations[name] = _TensorLocation(path, dtype, tuple(entry["shape"]), data_start + start, data_start + end)
    return locations
