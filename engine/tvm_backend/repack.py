"""MLC-layout tensors -> the parameter list a compiled Tandem library takes (once per model).

Linear weights are regrouped into output tiles (kernels.output_tile); scales, norms and dense
weights become float32 because the kernels compute in float32. A tied head reuses the
embedding's tensors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from engine.errors import ModelFileError

TIED_HEAD_SOURCE = "model.embed_tokens"
REPACK_LAYOUT = "output-tiles+f32-scales/1"
"""Names the layout repacked_params produces; part of the weight cache's key (weight_cache), so
change it whenever the arrays it yields for the same weights and shapes change."""


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
        if len(shape) == 3 and array.ndim == 2:
            array = _tile_rows(array, shape[0], shape[2])
        if tuple(array.shape) != tuple(shape):
            raise ModelFileError(
                f"The tensor {source!r} has shape {tuple(array.shape)} but the model config "
                f"implies {tuple(shape)}. The config and weights disagree; convert the model again."
            )
        yield np.ascontiguousarray(array.astype(dtype, copy=False))
