"""A numpy Q4_K quantizer for the tests (the `gguf` package reads K-quants but cannot write them):
per super-block of 256, eight groups of 32 each get value q * (d * sc_j) - dmin * m_j with 6-bit
sc_j and m_j, laid out in llama.cpp's 144-byte block. Simple rounding, not llama.cpp's search:
what matters is that the bytes are valid Q4_K that any reader dequantizes the same way."""

from __future__ import annotations

import numpy as np

SUPER = 256
GROUP = 32
BLOCK_BYTES = 144


def quantize_q4_k(values: np.ndarray) -> np.ndarray:
    """float [rows, columns] (columns a multiple of 256) -> uint8 [rows, columns // 256 * 144]."""
    rows, columns = values.shape
    if columns % SUPER:
        raise ValueError(f"Q4_K needs rows of a multiple of {SUPER} values, not {columns}")
    groups = values.astype(np.float32).reshape(-1, SUPER // GROUP, GROUP)
    low = np.minimum(groups.min(axis=2), 0.0)  # the offset is -dmin * m with m >= 0
    step = (groups.max(axis=2) - low) / 15.0
    d = (step.max(axis=1) / 63.0).astype(np.float16)
    dmin = (-low.min(axis=1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.clip(np.rint(np.divide(step, d32, out=np.zeros_like(step), where=d32 > 0)), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(np.divide(-low, dmin32, out=np.zeros_like(low), where=dmin32 > 0)), 0, 63).astype(np.uint8)
    scale = (d32 * sc)[:, :, None]
    offset = (dmin32 * m)[:, :, None]
    codes = np.rint(np.divide(groups + offset, scale, out=np.zeros_like(groups), where=scale > 0))
    codes = np.clip(codes, 0, 15).astype(np.uint8)

    out = np.zeros((groups.shape[0], BLOCK_BYTES), np.uint8)
    out[:, 0:2] = d.view(np.uint8).reshape(-1, 2)
    out[:, 2:4] = dmin.view(np.uint8).reshape(-1, 2)
    # Sub-blocks 0-3: 6 bits in bytes j (scale) and j + 4 (min). Sub-blocks 4-7: low 4 bits in
    # byte j + 8 (scale low nibble, min high nibble), top 2 bits in the spare bits of j and j + 4.
    out[:, 4:8] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    out[:, 8:12] = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    out[:, 12:16] = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    # Each 32 bytes hold groups 2i (low nibbles) and 2i + 1 (high nibbles).
    pairs = codes.reshape(-1, 4, 2, GROUP)
    out[:, 16:] = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1, 128)
    return out.reshape(rows, columns // SUPER * BLOCK_BYTES)
