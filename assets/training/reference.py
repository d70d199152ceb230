"""A transformers reference of a shipped MLC directory: its q4 weights dequantized into a
LlamaForCausalLM, to check what ships without the TVM engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from engine.artifact import load_params
from engine.config import read_chat_config
from engine.layout import restore_logical
from engine.quantization import QUANTIZATIONS


def _split(name: str, array: np.ndarray, config: LlamaConfig) -> dict[str, np.ndarray]:
    """MLC's fused tensors back to transformers' separate ones."""
    if name.endswith("qkv_proj.weight"):
        q = config.num_attention_heads * config.head_dim
        kv = config.num_key_value_heads * config.head_dim
        base = name.removesuffix("qkv_proj.weight")
        return {f"{base}q_proj.weight": array[:q], f"{base}k_proj.weight": array[q:q + kv],
                f"{base}v_proj.weight": array[q + kv:]}
    if name.endswith("gate_up_proj.weight"):
        base, half = name.removesuffix("gate_up_proj.weight"), array.shape[0] // 2
        return {f"{base}gate_proj.weight": array[:half], f"{base}up_proj.weight": array[half:]}
    return {name: array}


def reference_model(model_dir: Path) -> LlamaForCausalLM:
    chat = read_chat_config(model_dir)
    m = chat.model_config
    config = LlamaConfig(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads, head_dim=m.head_dim, rms_norm_eps=m.rms_norm_eps,
        rope_theta=m.rope_theta, max_position_embeddings=m.max_position_embeddings,
        tie_word_embeddings=m.tie_word_embeddings)
    logical = restore_logical(load_params(model_dir, chat), m, QUANTIZATIONS[chat.quantization])
    state = {}
    for name, array in logical.items():
        for hf_name, part in _split(name, np.asarray(array, dtype=np.float32), config).items():
            state[hf_name] = torch.from_numpy(np.ascontiguousarray(part))
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ValueError(f"{model_dir}: weights do not map onto Llama (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    return model.eval()
