"""llama.cpp's block bytes (engine.block_tensors) -> the row-major code, scale and min arrays the
runtime's GGUF weight kinds store, exactly (no re-quantizing): q4_0 and q4_1 become 4-bit codes
in MLC's nibble order with an f16 scale and an f16 min per block of 32; q4_k the same codes with
an f32 scale (d * sc_j) and min (-dmin * m_j) per group of 32; q8_0 int8 codes and an f16 scale.
The tiled layout the kernels read is made from these by tvm_backend/repack.py."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from engine.block_tensors import BLOCK_BYTES, BLOCK_ELEMENTS, BlockFormat, BlockTensor, block_elements
from engine.errors import ModelFileError
from engine.quantization import pack_nibbles

BLOCK_CODES_LAYOUT = "q4-mlc-nibbles+f16-scale+f16-min/1;q8-int8+f16-scale/1;q4k-mlc-nibbles+f32-scale+f32-min/1"
"""Names what block_arrays makes of the file's bytes; part of the weight cache's key for GGUF
models (weight_cache.gguf_weights_key), so change it whenever those arrays change."""
CODE_SUFFIX = ".q_weight"
SCALE_SUFFIX = ".q_scale"
MIN_SUFFIX = ".q_min"
Q4_0_ZERO = 8
"""Q4_0 codes run 0..15 around 8: value (q - 8) * d, so its min is -8 * d."""


def _blocks(tensor: BlockTensor, name: str) -> np.ndarray:
    """The tensor's bytes as [rows, blocks per row, block bytes], checked against its shape."""
    rows, columns = _matrix_shape(tensor, name)
    elements = block_elements(tensor.format)
    if columns % elements:
        raise ModelFileError(
            f"The tensor {name!r} has {columns} columns, not a multiple of {elements}, so it "
            f"cannot hold {tensor.format} blocks. The GGUF file is damaged; download it again."
        )
    per_row = columns // elements
    block_bytes = BLOCK_BYTES[tensor.format]
    data = np.asarray(tensor.data)
    if data.dtype != np.uint8 or data.size != rows * per_row * block_bytes:
        raise ModelFileError(
            f"The tensor {name!r} holds {data.size} bytes of {data.dtype}, but {tensor.format} "
            f"blocks of shape {tensor.shape} need {rows * per_row * block_bytes} bytes. "
            "The GGUF file is damaged or truncated; download it again."
        )
    return data.reshape(rows, per_row, block_bytes)


def _matrix_shape(tensor: BlockTensor, name: str) -> tuple[int, int]:
    if len(tensor.shape) != 2:
        raise ModelFileError(f"The tensor {name!r} has shape {tensor.shape}; a matrix was expected.")
    return int(tensor.shape[0]), int(tensor.shape[1])


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The f16 field at byte `start` of every block, as [rows, blocks]."""
    return np.ascontiguousarray(blocks[:, :, start : start + 2]).view("<f2")[:, :, 0].astype(np.float16)


def _nibble_codes(quants: np.ndarray) -> np.ndarray:
    """16 bytes per block -> 32 codes: byte i holds element i (low nibble) and i + 16 (high)."""
    rows, per_row, _ = quants.shape
    codes = np.concatenate([quants & np.uint8(0x0F), quants >> np.uint8(4)], axis=2)
    return codes.reshape(rows, per_row * BLOCK_ELEMENTS)


def _q4_k_sub_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """12 bytes per super-block -> its 8 six-bit scales and 8 six-bit mins (uint8 [..., 8] each).
    Sub-blocks 0-3 keep scale and min in the low 6 bits of bytes j and j + 4; sub-blocks 4-7
    take their low 4 bits from byte j + 4 (scale low nibble, min high nibble) and their top 2
    bits from the spare top bits of bytes j - 4 (scale) and j (min)."""
    first, second, low_bits = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    scales = np.concatenate([first & 0x3F, (low_bits & 0x0F) | ((first >> 6) << 4)], axis=-1)
    mins = np.concatenate([second & 0x3F, (low_bits >> 4) | ((second >> 6) << 4)], axis=-1)
    return scales, mins


def _q4_k_arrays(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K super-blocks [rows, supers, 144] -> (codes [rows, columns] in element order, scale
    and min [rows, columns / 32] as float32: d * sc_j and -dmin * m_j, exact in float32)."""
    rows, supers, _ = blocks.shape
    d = _f16(blocks, 0).astype(np.float32)[:, :, None]
    dmin = _f16(blocks, 2).astype(np.float32)[:, :, None]
    sub_scales, sub_mins = _q4_k_sub_scales(blocks[:, :, 4:16])
    quants = blocks[:, :, 16:].reshape(rows, supers, 4, 1, 32)
    # Each 32 bytes hold two groups: the low nibbles first, then the high ones.
    codes = np.concatenate([quants & np.uint8(0x0F), quants >> np.uint8(4)], axis=3)
    scale = (d * sub_scales.astype(np.float32)).reshape(rows, -1)
    low = (-dmin * sub_mins.astype(np.float32)).reshape(rows, -1)
    return codes.reshape(rows, supers * 256), scale, low


def block_arrays(tensor: BlockTensor, module: str) -> dict[str, np.ndarray]:
    """The arrays (by full name: module + suffix) that store one matrix of block format
    q4_0, q4_1, q4_k or q8_0 for the runtime, row-major [rows, ...]."""
    blocks = _blocks(tensor, module)
    if tensor.format == "q4_k":
        codes, scale, low = _q4_k_arrays(blocks)
        return {module + CODE_SUFFIX: pack_nibbles(codes), module + SCALE_SUFFIX: scale, module + MIN_SUFFIX: low}
    if tensor.format == "q8_0":
        codes = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(blocks.shape[0], -1)
        return {module + CODE_SUFFIX: codes, module + SCALE_SUFFIX: _f16(blocks, 0)}
    if tensor.format == "q4_0":
        scale = _f16(blocks, 0)
        low = (scale.astype(np.float32) * -Q4_0_ZERO).astype(np.float16)  # exact: a power of two
        quants = blocks[:, :, 2:]
    elif tensor.format == "q4_1":
        scale, low = _f16(blocks, 0), _f16(blocks, 2)
        quants = blocks[:, :, 4:]
    else:
        raise ModelFileError(f"The tensor {module!r} is in {tensor.format!r}, which has no block codes.")
    return {
        module + CODE_SUFFIX: pack_nibbles(_nibble_codes(quants)),
        module + SCALE_SUFFIX: scale,
        module + MIN_SUFFIX: low,
    }


def dequantize_blocks(tensor: BlockTensor) -> np.ndarray:
    """The float32 values of a block tensor (f32 as is), by llama.cpp's formulas: the numpy
    reference the kernels are tested against and what a float fallback would run."""
    if tensor.format == "f32":
        return np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    blocks = _blocks(tensor, "tensor")
    rows = blocks.shape[0]
    if tensor.format == "q4_k":
        codes, scale, low = _q4_k_arrays(blocks)
        grouped = codes.reshape(rows, -1, BLOCK_ELEMENTS).astype(np.float32)
        return (grouped * scale[:, :, None] + low[:, :, None]).reshape(rows, -1)
    d = _f16(blocks, 0).astype(np.float32)[:, :, None]
    if tensor.format == "q8_0":
        codes = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).astype(np.float32)
        return (codes * d).reshape(rows, -1)
    if tensor.format == "q4_0":
        codes = _nibble_codes(blocks[:, :, 2:]).reshape(blocks.shape[0], -1, BLOCK_ELEMENTS)
        return (d * (codes.astype(np.float32) - Q4_0_ZERO)).reshape(rows, -1)
    m = _f16(blocks, 2).astype(np.float32)[:, :, None]
    codes = _nibble_codes(blocks[:, :, 4:]).reshape(blocks.shape[0], -1, BLOCK_ELEMENTS)
    return (d * codes.astype(np.float32) + m).reshape(rows, -1)


class BlockArrays(Mapping[str, np.ndarray]):
    """Block tensors (keyed by LogicalTensor.name) seen as the runtime's stored arrays by full
    name (module + .q_weight / .q_scale / .q_min for block formats, .weight / .bias for f32),
    each converted when asked for, so only one tensor's codes are alive at a time."""

    def __init__(self, tensors: Mapping[str, BlockTensor]):
        self._tensors = tensors
        self._owner: dict[str, tuple[str, str]] = {}  # stored name -> (logical name, module)
        for name, tensor in tensors.items():
            module = name.rsplit(".", 1)[0]
            for suffix in stored_suffixes(tensor.format, name):
                self._owner[module + suffix] = (name, module)

    def __getitem__(self, key: str) -> np.ndarray:
        name, module = self._owner[key]
        tensor = self._tensors[name]
        if tensor.format == "f32":
            return np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
        return block_arrays(tensor, module)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._owner)

    def __len__(self) -> int:
        return len(self._owner)


def stored_suffixes(format: BlockFormat, name: str) -> tuple[str, ...]:
    """The suffixes of the arrays that store a tensor of this format named `name`."""
    if format == "f32":
        return ("." + name.rsplit(".", 1)[1],)
    if format == "q8_0":
        return (CODE_SUFFIX, SCALE_SUFFIX)
    return (CODE_SUFFIX, SCALE_SUFFIX, MIN_SUFFIX)
