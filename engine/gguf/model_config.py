"""A GGUF's `<arch>.*` metadata -> engine.config.ModelConfig (llama and qwen2), with Llama 3's
RoPE scaling rebuilt from the `rope_freqs` tensor the converter stores in its place."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.config import SUPPORTED_MODEL_TYPES, ModelConfig
from engine.errors import ModelFileError
from engine.gguf.reader import GGUFFile

ROPE_FREQS = "rope_freqs.weight"
_LLAMA3_LOW_FREQ_FACTOR = 1.0
"""rope_freqs fixes only original_context / (high - low) and low / (high - low); Meta's low
factor (1.0, in every Llama 3.x config) pins the third, and any choice gives the same RoPE."""


def model_config_from_gguf(gguf: GGUFFile) -> ModelConfig:
    """The architecture the file's metadata describes; ModelFileError names anything missing."""
    arch = gguf.architecture
    if arch not in SUPPORTED_MODEL_TYPES:
        raise ModelFileError(
            f"{gguf.path}: architecture {arch!r} is not supported; Tandem runs "
            f"{' and '.join(SUPPORTED_MODEL_TYPES)} GGUF files (Llama, SmolLM, Qwen2 and their fine-tunes)."
        )

    def positive(key: str) -> int:
        value = gguf.require(f"{arch}.{key}")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ModelFileError(f"{gguf.path}: metadata {arch}.{key} must be a positive integer (found {value!r}).")
        return int(value)

    hidden = positive("embedding_length")
    heads = positive("attention.head_count")
    kv_heads = int(gguf.get(f"{arch}.attention.head_count_kv") or heads)
    if heads % kv_heads:
        raise ModelFileError(f"{gguf.path}: {heads} attention heads do not split into {kv_heads} key/value heads.")
    head_dim = int(gguf.get(f"{arch}.attention.key_length") or hidden // heads)
    embedding = gguf.tensor("token_embd.weight")
    vocab = int(gguf.get(f"{arch}.vocab_size") or embedding.shape[0])
    if embedding.shape != (vocab, hidden):
        raise ModelFileError(
            f"{gguf.path}: token_embd.weight is {list(embedding.shape)} but the metadata implies "
            f"{[vocab, hidden]}; the file is inconsistent. Re-export it."
        )
    theta = float(gguf.get(f"{arch}.rope.freq_base") or 10000.0)
    context = positive("context_length")
    return ModelConfig(
        model_type=arch,
        hidden_size=hidden,
        intermediate_size=positive("feed_forward_length"),
        num_hidden_layers=positive("block_count"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        rms_norm_eps=float(gguf.require(f"{arch}.attention.layer_norm_rms_epsilon")),
        rope_theta=theta,
        rope_scaling=_rope_scaling(gguf, arch, theta, head_dim, context),
        tie_word_embeddings="output.weight" not in gguf.tensors,
        attention_bias=arch == "qwen2",
        max_position_embeddings=context,
    )


def _rope_scaling(gguf: GGUFFile, arch: str, theta: float, head_dim: int, context: int) -> dict[str, Any] | None:
    kind = gguf.get(f"{arch}.rope.scaling.type")
    if ROPE_FREQS in gguf.tensors:
        return _llama3_scaling(gguf, theta, head_dim, context)
    if kind in (None, "none"):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(gguf.require(f"{arch}.rope.scaling.factor"))}
    raise ModelFileError(
        f"{gguf.path}: RoPE scaling {kind!r} is not supported (Tandem runs plain, linear and Llama 3 RoPE)."
    )


def _llama3_scaling(gguf: GGUFFile, theta: float, head_dim: int, context: int) -> dict[str, Any] | None:
    """Llama 3.1+ files carry the per-frequency divisors in rope_freqs instead of the factors
    (1 for high frequencies, `factor` for low ones, a smooth blend between); recover the
    factors the engine takes and check that they reproduce the tensor."""
    from gguf.quants import dequantize

    stored = gguf.tensor(ROPE_FREQS)
    freqs = np.asarray(dequantize(stored.data, _qtype(stored.type_name)), dtype=np.float64).reshape(-1)
    if freqs.shape != (head_dim // 2,):
        raise ModelFileError(f"{gguf.path}: rope_freqs has {freqs.size} values, not head_dim/2 = {head_dim // 2}.")
    factor = float(freqs.max())
    if factor <= 1.0 + 1e-6:
        return None  # all ones: plain RoPE
    wavelength = 2 * np.pi * theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    blend = (1.0 / freqs - 1.0 / factor) / (1.0 - 1.0 / factor)  # 1 = unscaled, 0 = divided by factor
    middle = (blend > 1e-4) & (blend < 1 - 1e-4)
    if middle.sum() >= 2:
        # blend = A / wavelength - B with A = original_context / (high - low), B = low / (high - low)
        slope, intercept = np.polyfit(1.0 / wavelength[middle], blend[middle], 1)
        span = _LLAMA3_LOW_FREQ_FACTOR / -intercept if intercept < 0 else 3.0
        original = slope * span
        high = _LLAMA3_LOW_FREQ_FACTOR + span
    else:  # no blended frequencies to fit: Meta's defaults, checked below
        original, high = float(min(context, 8192)), 4.0
    scaling = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": _LLAMA3_LOW_FREQ_FACTOR,
        "high_freq_factor": round(float(high), 4),
        "original_max_position_embeddings": int(round(float(original))),
    }
    rebuilt = llama3_rope_freqs(scaling, theta, head_dim)
    if not np.allclose(rebuilt, freqs, rtol=1e-3, atol=1e-4):
        raise ModelFileError(
            f"{gguf.path}: rope_freqs does not follow Llama 3's RoPE scaling, the only kind of rope_freqs "
            "Tandem runs; the model needs a runtime that applies the tensor as it is."
        )
    return scaling


def llama3_rope_freqs(scaling: dict[str, Any], theta: float, head_dim: int) -> np.ndarray:
    """The divisor of each RoPE frequency under Llama 3 scaling, as llama.cpp's rope_freqs holds it."""
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    original = float(scaling["original_max_position_embeddings"])
    wavelength = 2 * np.pi * theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    blend = np.clip((original / wavelength - low) / (high - low), 0.0, 1.0)
    return 1.0 / ((1.0 - blend) / factor + blend)


def _qtype(type_name: str) -> Any:
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType[type_name]
