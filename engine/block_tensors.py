"""Weights in llama.cpp's block formats, as a GGUF file holds them: the record the GGUF reader
(engine.gguf) hands to the runtime, which runs them in their own layout (no re-quantizing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

BlockFormat = Literal["f32", "q8_0", "q4_0", "q4_1", "q4_k"]
"""f32: plain float32 (F32, F16 and BF16 tensors widen to it exactly). q8_0: blocks of 32 int8
with an f16 scale (34 bytes). q4_0: 32 codes with an f16 scale, value (q - 8) * d (18 bytes).
q4_1: 32 codes with an f16 scale and min, value q * d + m (20 bytes). In the 4-bit blocks byte i
holds element i in its low nibble and element i + 16 in its high nibble. q4_k: super-blocks of
256 (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit sub-block scales sc_j and mins m_j, then
128 bytes of codes; its 8 groups of 32 are value q * (d * sc_j) - dmin * m_j, group 2i in the
low nibbles of bytes 32i..32i+31 and group 2i + 1 in their high nibbles."""

BLOCK_ELEMENTS = 32
"""Elements per block of the 32-element formats, and per group (scale and min) of every format."""
BLOCK_BYTES: dict[BlockFormat, int] = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q4_k": 144}
SUPER_BLOCK_ELEMENTS = 256


def block_elements(format: BlockFormat) -> int:
    """Elements per stored block: 256 for q4_k's super-blocks, else 32."""
    return SUPER_BLOCK_ELEMENTS if format == "q4_k" else BLOCK_ELEMENTS


@dataclass(frozen=True)
class BlockTensor:
    """One logical tensor of the model (under MLC's module name, q/k/v and gate/up already fused,
    llama's Q/K rows already un-permuted) in one block format."""

    format: BlockFormat
    shape: tuple[int, ...]
    """The logical shape in numpy order: (rows, columns) for matrices, (n,) for norms and biases."""
    data: np.ndarray
    """f32: a float32 array of `shape`. Block formats: uint8 [rows, columns // 32 * BLOCK_BYTES],
    each row its blocks in order (GGUF's own bytes, possibly memory-mapped)."""
