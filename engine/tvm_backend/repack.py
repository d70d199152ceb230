"""MLC-layout tensors -> the parameter list a compiled Tandem library takes (once per model).

Linear weights are regrouped into output tiles (kernels.output_tile), or for the int8 kernels
into the VNNI layout (int8_kernels.py); scales, norms and dense weights become float32 because
the kernels compute in float32. A tied head reuses the embedding's tensors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from engine.errors import ModelFileError

TIED_HEAD_SOURCE = "model.embed_tokens"
REPACK_LAYOUT = "output-tiles+f32-scales/1;q4-vnni-16x4/2"
"""Names the layouts repacked_params produces (the float kernels' output tiles; the int8 kernels'
VNNI layout, see _vnni_codes); part of the weight cache's key (weight_cache), so change it
whenever the arrays it yields for the same weights and shapes change."""
_VNNI_RANK = 5


def _is_vnni(shape: tuple[int, ...], dtype: str) -> bool:
    return len(shape) == _VNNI_RANK and dtype == "uint8"


def _vnni_codes(words: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """MLC's q_weight (uint32 [n_out, k/8], low nibble first) -> the VNNI layout `shape`:
    [tile, group, chunk, 16 rows, 64 bytes], byte 4*i + b of chunk c holding the codes of
    k = 8c + b (low nibble) and k = 8c + 4 + b (high nibble) of output row i. Chunk c of a
    group is word c of it, so each word is reshuffled on its own, then the words are moved."""
    n_tiles, groups, chunks, sub, width = shape
    tile = sub * (width // 4)
    if words.shape != (n_tiles * tile, groups * chunks):
        raise ModelFileError(
            f"A 4-bit weight has shape {tuple(words.shape)}, which does not fit the int8 kernels' "
            f"layout {tuple(shape)}. The config and weights disagree; convert the model again."
        )
    halves = np.ascontiguousarray(words, dtype="<u4").view("<u2")
    spread = _SPREAD_NIBBLES[halves].reshape(*words.shape, 2)
    # Codes k = 0..3 (the low half-word) to the low nibbles of bytes 0..3, k = 4..7 to the high ones.
    joined = spread[..., 0] | (spread[..., 1] << 4)
    # [tile, sub, row i, group, chunk] -> [tile, group, chunk, sub, row i]
    moved = joined.reshape(n_tiles, sub, width // 4, groups, chunks).transpose(0, 3, 4, 1, 2)
    return np.ascontiguousarray(moved, dtype="<u4").view(np.uint8).reshape(shape)


def _nibble_spreader() -> np.ndarray:
    """For each 16-bit value, its four nibbles each moved to the bottom of a byte of its own."""
    half = np.arange(1 << 16, dtype=np.uint32)
    return (half & 0xF) | ((half & 0xF0) << 4) | ((half & 0xF00) << 8) | ((half & 0xF000) << 12)


_SPREAD_NIBBLES = _nibble_spreader()


def _tile_rows(array: np.ndarray, n_tiles: int, tile: int) -> np.ndarray:
    rows, cols = array.shape
    return np.ascontiguousarray(array.reshape(n_tiles, tile, cols).transpose(0, 2, 1))


def _source_name(name: str, tied: bool) -> str:
    if tied and name.startswith("lm_head."):
        return TIED_HEAD_SOURCE + name[len("lm_head") :]
    return name


def repacked_params(
    mlc_params: Mapping[str, np.ndarray],
    wanted: Sequence[tuple[str, tuple[int, ...], str]],
    tied: bool,
) -> Iterator[np.ndarray]:
    """Arrays in the order and layout of `wanted` (name, shape, dtype) from MLC's tensors, one
    at a time, so only one repacked copy is alive while they move to the device."""
    for name, shape, dtype in wanted:
        source = _source_name(name, tied)
        if source not in mlc_params:
            raise ModelFileError(
                f"The model's weights lack the tensor {source!r}. The directory is incomplete or "
                "was converted for another architecture; convert it again with `tandem models convert`."
            )
        array = np.asarray(mlc_params[source])
        if _is_vnni(shape, dtype):
            array = _vnni_codes(array, shape)
        elif len(shape) == 3 and array.ndim == 2:
            array = _tile_rows(array, shape[0], shape[2])
        if tuple(array.shape) != tuple(shape):
            raise ModelFileError(
                f"The tensor {source!r} has shape {tuple(array.shape)} but the model config "
                f"implies {tuple(shape)}. The config and weights disagree; convert the model again."
            )
        yield np.ascontiguousarray(array.astype(dtype, copy=False))
