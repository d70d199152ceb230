"""The architecture of tandem-nano: a small Llama, as a transformers LlamaConfig."""

from __future__ import annotations

from transformers import LlamaConfig

CONTEXT_WINDOW = 512


def nano_config(vocab_size: int, eos_token_id: int, pad_token_id: int) -> LlamaConfig:
    """dim 256, 6 layers, 8 query / 4 KV heads, SwiGLU 704, RoPE 1e4, tied embeddings (~5M)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        hidden_act="silu",
        max_position_embeddings=CONTEXT_WINDOW,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        initializer_range=0.02,
    )
