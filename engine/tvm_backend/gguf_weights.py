"""A GGUF model's weights for the runtime: the file its model directory references, read as
BlockTensors (the one seam with the GGUF reader: load_block_tensors), and the weight kind each
linear layer and the embedding run as (their own block format: nothing is re-quantized)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.block_tensors import BlockFormat, BlockTensor
from engine.config import ChatConfig, ModelConfig, gguf_file
from engine.errors import ModelFileError
from engine.layout import logical_tensors
from engine.quantization import TensorKind
from engine.tvm_backend.kernels import WeightKind

KIND_OF_FORMAT: dict[BlockFormat, WeightKind] = {"f32": "q0", "q4_0": "q4_0", "q4_1": "q4_1", "q8_0": "q8_0"}


@dataclass(frozen=True)
class GGUFWeights:
    path: Path
    tensors: Mapping[str, BlockTensor]
    """Keyed by LogicalTensor.name (engine.layout)."""
    kinds: dict[str, WeightKind]
    """LogicalTensor.module -> weight kind, for every linear layer and the embedding."""


def open_gguf_weights(model_dir: Path, chat_config: ChatConfig) -> GGUFWeights:
    """The GGUF the directory's config names (relative paths are under model_dir), its tensors
    and their kinds; ModelFileError names a missing file or tensor."""
    path = gguf_file(model_dir, chat_config)
    if not path.is_file():
        raise ModelFileError(
            f"{path} is missing; the model directory {model_dir} runs that GGUF file. Restore it, "
            "or import the model again with `tandem models import PATH.gguf`."
        )
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


def load_block_tensors(gguf_path: Path, model_config: ModelConfig) -> dict[str, BlockTensor]:
    """engine.gguf.load_block_tensors (the GGUF reader's), or this module's stand-in while that
    package is absent."""
    try:
        from engine.gguf import load_block_tensors as read
    except ImportError:
        read = _standin_block_tensors
    return read(gguf_path, model_config)


# A minimal reader for llama / qwen2 files in F32, F16, Q8_0, Q4_0 and Q4_1, used only until
# engine.gguf lands (it has the checks, K-quants and the tokenizer).
_PARTS = {
    "qkv_proj": ("attn_q", "attn_k", "attn_v"),
    "c_attn": ("attn_q", "attn_k", "attn_v"),
    "gate_up_proj": ("ffn_gate", "ffn_up"),
    "o_proj": ("attn_output",),
    "down_proj": ("ffn_down",),
    "input_layernorm": ("attn_norm",),
    "post_attention_layernorm": ("ffn_norm",),
}
_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def _standin_block_tensors(gguf_path: Path, model_config: ModelConfig) -> dict[str, BlockTensor]:
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(gguf_path)
    by_name = {tensor.name: tensor for tensor in reader.tensors}
    formats: dict[GGMLQuantizationType, BlockFormat] = {
        GGMLQuantizationType.Q8_0: "q8_0",
        GGMLQuantizationType.Q4_0: "q4_0",
        GGMLQuantizationType.Q4_1: "q4_1",
    }
    result: dict[str, BlockTensor] = {}
    for logical in logical_tensors(model_config):
        suffix = ".bias" if logical.kind is TensorKind.BIAS else ".weight"
        if logical.module in _GLOBAL:
            names = [_GLOBAL[logical.module] + suffix]
        else:
            layer, leaf = logical.module.split(".")[2], logical.module.split(".")[-1]
            names = [f"blk.{layer}.{part}{suffix}" for part in _PARTS[leaf]]
        parts, part_formats = [], set()
        for name in names:
            tensor = by_name[name]
            rows = int(tensor.shape[-1])  # GGUF lists dimensions innermost first
            format = formats.get(tensor.tensor_type, "f32")
            data = np.asarray(tensor.data)
            if format == "f32":
                data = dequantize(data, tensor.tensor_type).astype(np.float32)
            data = data.reshape(rows, -1) if len(tensor.shape) > 1 else data.reshape(rows)
            leaf = name.split(".")[-2]
            if model_config.model_type == "llama" and leaf in ("attn_q", "attn_k"):
                heads = model_config.num_attention_heads if leaf == "attn_q" else model_config.num_key_value_heads
                data = data[np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(1, 2).reshape(rows)]
            parts.append(data)
            part_formats.add(format)
        if len(part_formats) != 1:
            raise ModelFileError(f"{gguf_path}: the parts of {logical.name} mix formats; import the model again.")
        data = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        format = part_formats.pop()
        if format == "f32":
            data = data.reshape(logical.shape)
        result[logical.name] = BlockTensor(format, logical.shape, data)
    return result
