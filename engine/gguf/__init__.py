"""GGUF files in: llama.cpp's model files read natively (engine.gguf.reader), their metadata as a
ModelConfig, their weights as BlockTensors for the runtime, their tokenizer rebuilt, and a Tandem
model directory that references the file (engine.gguf.importer)."""

from __future__ import annotations

from pathlib import Path

from engine.block_tensors import BlockTensor
from engine.config import ModelConfig
from engine.gguf.model_config import model_config_from_gguf
from engine.gguf.reader import GGUFFile
from engine.gguf.tensors import TensorPlan, load_tensor, plan_tensors

__all__ = ["GGUFFile", "TensorPlan", "load_block_tensors", "read_model_config", "plan_tensors"]


def read_model_config(gguf_path: Path | str | GGUFFile) -> ModelConfig:
    """The architecture a GGUF describes (ModelFileError for a bad or unsupported file)."""
    return model_config_from_gguf(_open(gguf_path))


def load_block_tensors(gguf_path: Path | str | GGUFFile, model_config: ModelConfig) -> dict[str, BlockTensor]:
    """Every logical tensor of `model_config` (engine.layout.logical_tensors), keyed by
    LogicalTensor.name, in the block format it runs in. Everything is checked before anything
    is loaded; native tensors that need no reorder or fusing stay memory-mapped. An open
    GGUFFile may be passed instead of a path (opening parses all metadata: seconds on a big vocab)."""
    gguf = _open(gguf_path)
    plans = plan_tensors(gguf, model_config)
    return {plan.logical.name: load_tensor(plan, model_config) for plan in plans}


def _open(gguf_path: Path | str | GGUFFile) -> GGUFFile:
    return gguf_path if isinstance(gguf_path, GGUFFile) else GGUFFile(gguf_path)
