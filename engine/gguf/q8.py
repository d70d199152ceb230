"""A numpy Q8_0 quantizer: the near-lossless route for GGUF tensors the runtime has no kernel
for (K-quants, fused parts in mixed formats). Blocks of 32: f16 d = max|x| / 127, int8 q = round(x / d)."""

from __future__ import annotations

import numpy as np

from engine.block_tensors import BLOCK_BYTES, BLOCK_ELEMENTS


def quantize_q8_0(values: np.ndarray) -> np.ndarray:
    """float [rows, columns] (columns a multiple of 32) -> uint8 [rows, columns // 32 * 34],
    each block its f16 scale then its 32 int8 codes, as llama.cpp lays Q8_0 out."""
    rows, columns = values.shape
    if columns % BLOCK_ELEMENTS:
        raise ValueError(f"Q8_0 needs rows of a multiple of {BLOCK_ELEMENTS} values, not {columns}")
    blocks = values.astype(np.float32, copy=False).reshape(-1, BLOCK_ELEMENTS)
    scale = np.abs(blocks).max(axis=1, keepdims=True) / 127.0
    # The codes divide by the float32 scale, as llama.cpp does, before the scale is stored as f16.
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    scaled = blocks * inverse
    codes = _round_half_away(scaled).astype(np.int8)
    out = np.empty((blocks.shape[0], BLOCK_BYTES["q8_0"]), dtype=np.uint8)
    out[:, :2] = scale.astype(np.float16).view(np.uint8)
    out[:, 2:] = codes.view(np.uint8)
    return out.reshape(rows, columns // BLOCK_ELEMENTS * BLOCK_BYTES["q8_0"])


def dequantize_q8_0(blocks: np.ndarray, columns: int) -> np.ndarray:
    """uint8 Q8_0 rows -> float32 [rows, columns]; the inverse, for checks and reports."""
    rows = blocks.shape[0]
    flat = np.ascontiguousarray(blocks).reshape(-1, BLOCK_BYTES["q8_0"])
    scale = flat[:, :2].copy().view(np.float16).astype(np.float32)
    codes = flat[:, 2:].view(np.int8).astype(np.float32)
    return (codes * scale).reshape(rows, columns)


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """C's roundf. floor(|x| + 0.5) would round 0.49999997 up, as the sum rounds to 1.0 in float32."""
    magnitude = np.abs(values)
    whole = np.floor(magnitude)
    return np.sign(values) * (whole + np.floor(2 * (magnitude - whole)))
