"""A GGUF model's weights for the runtime: the file its model directory references, read as
BlockTensors (by engine.gguf.load_block_tensors, the one seam with the GGUF reader), and the
weight kind each linear layer and the embedding run as (their own block format: nothing is
re-quantized)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.block_tensors import BlockFormat, BlockTensor
from engine.config import ChatConfig, ModelConfig
from engine.errors import ModelFileError
from engine.gguf import load_block_tensors
from engine.gguf.importer import gguf_path_of
from engine.layout import logical_tensors
from engine.quantization import TensorKind

if TYPE_CHECKING:  # kernels imports TVM's compiler; a warm start must not
    from engine.tvm_backend.kernels import WeightKind

KIND_OF_FORMAT: dict[BlockFormat, WeightKind] = {
    "f32": "q0",
    "q4_0": "q4_0",
    "q4_1": "q4_1",
    "q4_k": "q4_k",
    "q8_0": "q8_0",
}


@dataclass(frozen=True)
class GGUFWeights:
    path: Path
    tensors: Mapping[str, BlockTensor]
    """Keyed by LogicalTensor.name (engine.layout)."""
    kinds: dict[str, WeightKind]
    """LogicalTensor.module -> weight kind, for every linear layer and the embedding."""


def open_gguf_weights(model_dir: Path, chat_config: ChatConfig) -> GGUFWeights:
    """The GGUF the directory's config names (relative paths are under model_dir), its tensors
    (read by engine.gguf: the one seam with the GGUF reader) and their kinds; ModelFileError
    names a missing file or tensor."""
    path = gguf_path_of(model_dir, {"tandem": chat_config.tandem})
    tensors = load_block_tensors(path, chat_config.model_config)
    return GGUFWeights(path, tensors, weight_kinds(tensors, chat_config.model_config, path))


def weight_kinds(tensors: Mapping[str, BlockTensor], config: ModelConfig, source: Path) -> dict[str, WeightKind]:
    """The kind of every weight-carrying module of `config`, from its tensor's block format."""
    kinds: dict[str, WeightKind] = {}
    for tensor in logical_tensors(config):
        if tensor.kind not in (TensorKind.LINEAR, TensorKind.EMBEDDING):
            continue
        block = tensors.get(tensor.name)
        if block is None:
            raise ModelFileError(f"{source}: the tensor for {tensor.name} is missing; import the model again.")
        kinds[tensor.module] = KIND_OF_FORMAT[block.format]
    return kinds


