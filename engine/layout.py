"""The parameters of a model under MLC's names: which logical tensors a ModelConfig has (q, k, v
fused into one projection, gate and up into another) and the arrays a quantization stores them as."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.config import ModelConfig
from engine.quantization import Quantization, StoredSpec, TensorKind


@dataclass(frozen=True)
class LogicalTensor:
    """One tensor of the model as the architecture sees it, before quantization."""

    module: str
    """MLC's module path, e.g. "model.layers.0.self_attn.qkv_proj"; stored names add a suffix."""
    kind: TensorKind
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        """The unquantized parameter name: module + ".weight" (or ".bias")."""
        return self.module + (".bias" if self.kind is TensorKind.BIAS else ".weight")


def qkv_module(config: ModelConfig, layer: int) -> str:
    """MLC names the fused attention input projection c_attn in qwen2 and qkv_proj in llama."""
    projection = "c_attn" if config.model_type == "qwen2" else "qkv_proj"
    return f"model.layers.{layer}.self_attn.{projection}"


def logical_tensors(config: ModelConfig) -> list[LogicalTensor]:
    """Every tensor of the model, in MLC's order: embedding, layers, final norm, untied lm_head."""
    hidden = config.hidden_size
    qkv_rows = (config.num_attention_heads + 2 * config.num_key_value_heads) * config.head_dim
    tensors = [LogicalTensor("model.embed_tokens", TensorKind.EMBEDDING, (config.vocab_size, hidden))]
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}"
        qkv = qkv_module(config, layer)
        tensors.append(LogicalTensor(qkv, TensorKind.LINEAR, (qkv_rows, hidden)))
        if config.attention_bias:
            tensors.append(LogicalTensor(qkv, TensorKind.BIAS, (qkv_rows,)))
        tensors += [
            LogicalTensor(
                f"{prefix}.self_attn.o_proj", TensorKind.LINEAR, (hidden, config.num_attention_heads * config.head_dim)
            ),
            LogicalTensor(f"{prefix}.mlp.gate_up_proj", TensorKind.LINEAR, (2 * config.intermediate_size, hidden)),
            LogicalTensor(f"{prefix}.mlp.down_proj", TensorKind.LINEAR, (hidden, config.intermediate_size)),
            LogicalTensor(f"{prefix}.input_layernorm", TensorKind.NORM, (hidden,)),
            LogicalTensor(f"{prefix}.post_attention_layernorm", TensorKind.NORM, (hidden,)),
        ]
    tensors.append(LogicalTensor("model.norm", TensorKind.NORM, (hidden,)))
    if not config.tie_word_embeddings:
        tensors.append(LogicalTensor("lm_head", TensorKind.LINEAR, (config.vocab_size, hidden)))
    return tensors


def stored_specs(config: ModelConfig, quantization: Quantization) -> dict[str, StoredSpec]:
    """Every array the tensor cache must hold, by full name, in order."""
    specs: dict[str, StoredSpec] = {}
    for tensor in logical_tensors(config):
        for suffix, spec in quantization.stored_specs(tensor.kind, tensor.shape).items():
            specs[tensor.module + suffix] = spec
    return specs


def restore_logical(
    params: Mapping[str, np.ndarray], config: ModelConfig, quantization: Quantization
) -> dict[str, np.ndarray]:
    """The logical tensors (dequantized, model dtype) keyed by LogicalTensor.name."""
    restored: dict[str, np.ndarray] = {}
    for tensor in logical_tensors(config):
        suffixes = quantization.stored_specs(tensor.kind, tensor.shape)
        stored = {suffix: params[tensor.module + suffix] for suffix in suffixes}
        restored[tensor.name] = quantization.restore(tensor.kind, stored, tensor.shape)
    return restored
