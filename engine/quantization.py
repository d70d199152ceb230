"""MLC's weight quantizations in numpy: q4f16_1 / q4f32_1 group quantization (bit-exact with
MLC's layout) and the q0f16 / q0f32 plain casts, plus what each does to which kind of tensor."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

GROUP_SIZE = 32
BITS = 4
VALUES_PER_WORD = 32 // BITS
MAX_INT = 2 ** (BITS - 1) - 1  # 7: codes run 0..14 and dequantize to (q - 7) * scale
_BLOCK_ELEMENTS = 1 << 22  # rows are quantized in blocks of about this many weights, to bound memory


class TensorKind(enum.Enum):
    """What a parameter is, which decides how a quantization stores it."""

    LINEAR = "linear"  # [out, in] weight of a linear layer, the lm_head included
    EMBEDDING = "embedding"  # [vocab, hidden]
    NORM = "norm"  # RMSNorm weight: stays in the model dtype
    BIAS = "bias"  # stays in the model dtype


@dataclass(frozen=True)
class StoredSpec:
    """The shape and dtype of one array as it lies in the tensor cache."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Quantization:
    name: str
    model_dtype: str
    """The dtype of unquantized tensors and of q4 scales: "float16" or "float32"."""
    group_quantized: bool

    def stored_specs(self, kind: TensorKind, shape: tuple[int, ...]) -> dict[str, StoredSpec]:
        """The arrays (by name suffix) that store a logical tensor of this kind and shape."""
        if self._quantizes(kind):
            rows, cols = shape
            groups = _ceil_div(cols, GROUP_SIZE)
            return {
                ".q_weight": StoredSpec((rows, groups * GROUP_SIZE // VALUES_PER_WORD), "uint32"),
                ".q_scale": StoredSpec((rows, groups), self.model_dtype),
            }
        return {_plain_suffix(kind): StoredSpec(tuple(shape), self.model_dtype)}

    def store(self, kind: TensorKind, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Quantize or cast a logical tensor into the arrays that store it, by name suffix."""
        if self._quantizes(kind):
            q_weight, q_scale = quantize_q4(tensor, self.model_dtype)
            return {".q_weight": q_weight, ".q_scale": q_scale}
        return {_plain_suffix(kind): np.ascontiguousarray(tensor, dtype=self.model_dtype)}

    def restore(self, kind: TensorKind, stored: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """The logical tensor back from its stored arrays (dequantized, in the model dtype)."""
        if self._quantizes(kind):
            return dequantize_q4(stored[".q_weight"], stored[".q_scale"], columns=shape[1])
        return stored[_plain_suffix(kind)]

    def _quantizes(self, kind: TensorKind) -> bool:
        return self.group_quantized and kind in (TensorKind.LINEAR, TensorKind.EMBEDDING)


QUANTIZATIONS: Mapping[str, Quantization] = {
    q.name: q
    for q in (
        Quantization("q4f16_1", "float16", group_quantized=True),
        Quantization("q4f32_1", "float32", group_quantized=True),
        Quantization("q0f16", "float16", group_quantized=False),
        Quantization("q0f32", "float32", group_quantized=False),
    )
}


def quantize_q4(weight: np.ndarray, model_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Group-quantize W[N, K] along K: (q_weight uint32 [N, ceil(K/32)*4], q_scale [N, ceil(K/32)]).

    The arithmetic runs in the model dtype, as MLC's does: the weight is first cast to it, and
    each step rounds to it. A K that is not a multiple of 32 is padded with zero codes."""
    rows_per_block = max(1, _BLOCK_ELEMENTS // max(1, weight.shape[1]))
    blocks = [
        _quantize_rows(weight[start : start + rows_per_block], np.dtype(model_dtype))
        for start in range(0, weight.shape[0], rows_per_block)
    ]
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def _quantize_rows(weight: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = weight.shape
    groups = _ceil_div(cols, GROUP_SIZE)
    padded = np.zeros((rows, groups * GROUP_SIZE), dtype=dtype)
    padded[:, :cols] = weight.astype(dtype)
    grouped = padded.reshape(rows, groups, GROUP_SIZE)
    scale = (np.abs(grouped).max(axis=2) / dtype.type(MAX_INT)).astype(dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        shifted = (grouped / scale[:, :, None]).astype(dtype) + dtype.type(MAX_INT)
    # An all-zero group divides 0 by 0; MLC's clamp turns that NaN into code 0, and
    # (0 - 7) * 0 still dequantizes to exactly 0.
    codes = np.clip(np.nan_to_num(np.round(shifted), nan=0.0), 0, 2 * MAX_INT).astype(np.uint32)
    codes = codes.reshape(rows, groups * GROUP_SIZE)
    codes[:, cols:] = 0
    return pack_nibbles(codes), scale


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes [N, K] into uint32 words [N, K/8]: element k sits in word k // 8 at bit 4 * (k % 8)."""
    rows, cols = codes.shape
    lanes = codes.astype(np.uint32).reshape(rows, cols // VALUES_PER_WORD, VALUES_PER_WORD)
    shifts = (np.arange(VALUES_PER_WORD, dtype=np.uint32) * BITS)[None, None, :]
    return np.bitwise_or.reduce(lanes << shifts, axis=2).astype(np.uint32)


def unpack_nibbles(q_weight: np.ndarray) -> np.ndarray:
    """The 4-bit codes [N, 8 * words] held in uint32 words [N, words]."""
    shifts = (np.arange(VALUES_PER_WORD, dtype=np.uint32) * BITS)[None, None, :]
    codes = (q_weight.astype(np.uint32)[:, :, None] >> shifts) & np.uint32(0xF)
    return codes.reshape(q_weight.shape[0], -1)


def dequantize_q4(q_weight: np.ndarray, q_scale: np.ndarray, columns: int | None = None) -> np.ndarray:
    """W[N, K] = (q - 7) * scale, computed and rounded in the scale's dtype as MLC does."""
    dtype = q_scale.dtype
    codes = unpack_nibbles(q_weight).astype(dtype)
    rows, groups = q_scale.shape
    centred = (codes - dtype.type(MAX_INT)).reshape(rows, groups, GROUP_SIZE)
    weight = (centred * q_scale[:, :, None]).astype(dtype).reshape(rows, groups * GROUP_SIZE)
    return weight if columns is None else weight[:, :columns]


def _plain_suffix(kind: TensorKind) -> str:
    return ".bias" if kind is TensorKind.BIAS else ".weight"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
