"""Engine test fixtures: tiny byte-level BPE tokenizers and tiny random Hugging Face checkpoints
(Llama and Qwen2, tied or untied, GQA) saved with transformers' save_pretrained, and their
conversions into MLC model directories. All are built once per session and memoised."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

SENTENCES = [
    "Tandem keeps every conversation on your machine.",
    "Press Ctrl+N to start a new conversation, and Ctrl+Q to quit.",
    "The quick brown fox jumps over the lazy dog.",
    "Local models answer first; the cloud helps only when allowed.",
    "Numbers like 12, 345 and 6789 are split into digits.",
    "Héllo wörld, 你好世界, こんにちは, 🙂👍🏽 and naïve café.",
] * 4

CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_JINJA = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

TINYLLAMA_JINJA = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + "
    "eos_token }}{% elif message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}"
)

TokenizerBuilder = Callable[..., Path]
CheckpointBuilder = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> TokenizerBuilder:
    """build(style) -> a folder with tokenizer.json and tokenizer_config.json. Styles: "chatml"
    and "llama-3" (byte-level BPE with those special tokens), "tinyllama" (SentencePiece-style
    BPE with byte fallback, <s> and </s>, as Llama 2 and TinyLlama use)."""
    built: dict[str, Path] = {}

    def build(style: str = "chatml") -> Path:
        if style not in built:
            folder = tmp_path_factory.mktemp(f"tokenizer-{style}")
            writer = _write_sentencepiece_tokenizer if style == "tinyllama" else _write_tokenizer
            built[style] = writer(folder, style)
        return built[style]

    return build


def _write_sentencepiece_tokenizer(folder: Path, style: str) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tokenizer.train_from_iterator([s for s in SENTENCES if s.isascii()], trainer)
    # SentencePiece's byte fallback: the 256 <0xNN> pieces, in the vocab but not special.
    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": TINYLLAMA_JINJA}
    config["tokenizer_class"] = "LlamaTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


def _write_tokenizer(folder: Path, style: str) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = CHATML_TOKENS if style == "chatml" else LLAMA3_TOKENS
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    if style == "chatml":
        config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
        config["chat_template"] = CHATML_JINJA
    else:
        config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_JINJA}
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="session")
def tiny_hf_checkpoint(tmp_path_factory, tiny_tokenizer_dir) -> CheckpointBuilder:
    """build(model_type="llama"|"qwen2", tie=True, dtype="float32"|"bfloat16", style="chatml",
    seed=0, **config_overrides) -> a save_pretrained folder with the tokenizer files beside it.

    Defaults: hidden 64, 2 layers, 4 heads over 2 KV heads (GQA), intermediate 128. Norm weights
    and biases are randomised too, so a converter that mixes them up is caught."""
    built: dict[tuple, Path] = {}

    def build(
        model_type: str = "llama",
        tie: bool = True,
        dtype: str = "float32",
        style: str = "chatml",
        seed: int = 0,
        **overrides,
    ) -> Path:
        key = (model_type, tie, dtype, style, seed, tuple(sorted(overrides.items())))
        if key not in built:
            folder = tmp_path_factory.mktemp(f"hf-{model_type}-{'tied' if tie else 'untied'}-{dtype}")
            tokenizer_folder = tiny_tokenizer_dir(style)
            _save_checkpoint(folder, tokenizer_folder, model_type, tie, dtype, seed, overrides)
            built[key] = folder
        return built[key]

    return build


def _save_checkpoint(
    folder: Path, tokenizer_folder: Path, model_type: str, tie: bool, dtype: str, seed: int, overrides: dict
) -> None:
    import shutil

    import torch
    import transformers
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json"))
    tokenizer_config = json.loads((tokenizer_folder / "tokenizer_config.json").read_text())
    settings = dict(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=tokenizer.token_to_id(tokenizer_config["bos_token"] or ""),
        eos_token_id=tokenizer.token_to_id(tokenizer_config["eos_token"]),
    )
    settings.update(overrides)
    if model_type == "qwen2":
        config, model_class = transformers.Qwen2Config(**settings), transformers.Qwen2ForCausalLM
    else:
        config, model_class = transformers.LlamaConfig(**settings), transformers.LlamaForCausalLM
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                parameter.normal_(0.0, 0.1)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_folder / name, folder / name)


@pytest.fixture(scope="session")
def tiny_mlc_model(tmp_path_factory, tiny_hf_checkpoint) -> Callable[..., Path]:
    """build(quantization="q0f32", **checkpoint_args) -> an MLC model directory converted from
    tiny_hf_checkpoint(**checkpoint_args) by engine.convert."""
    built: dict[tuple, Path] = {}

    def build(quantization: str = "q0f32", **checkpoint_args) -> Path:
        key = (quantization, tuple(sorted(checkpoint_args.items())))
        if key not in built:
            from engine.convert import convert_hf_checkpoint

            hf_dir = tiny_hf_checkpoint(**checkpoint_args)
            out_dir = tmp_path_factory.mktemp(f"mlc-{quantization}") / "model"
            convert_hf_checkpoint(hf_dir, out_dir, quantization)
            built[key] = out_dir
        return built[key]

    return build


@pytest.fixture(scope="session")
def tiny_chat_config():
    """build(quantization="q4f16_1") -> a small qwen2 ChatConfig (untied, qkv bias) built directly."""
    from engine.config import ChatConfig, ModelConfig
    from engine.templates import builtin_template

    def build(quantization: str = "q4f16_1") -> ChatConfig:
        model = ModelConfig(
            model_type="qwen2", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100,
            rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None, tie_word_embeddings=False,
            attention_bias=True, max_position_embeddings=128,
        )  # fmt: skip
        return ChatConfig(
            model_config=model, model_type="qwen2", quantization=quantization, vocab_size=100,
            context_window_size=128, prefill_chunk_size=64, sliding_window_size=-1,
            conv_template=builtin_template("qwen2"),
        )  # fmt: skip

    return build


@pytest.fixture(scope="session")
def hf_weights_from_mlc() -> Callable[[Path], dict]:
    """weights(model_dir) -> {Hugging Face name: float32 array}: an MLC directory's parameters
    dequantized and un-fused (qkv -> q, k, v; gate_up -> gate, up), ready for
    `model.load_state_dict({k: torch.from_numpy(v) ...}, strict=False)` in a transformers
    reference. Tied checkpoints get no lm_head.weight."""
    from engine.artifact import load_params
    from engine.config import read_chat_config
    from engine.layout import restore_logical
    from engine.quantization import QUANTIZATIONS

    def weights(model_dir: Path) -> dict:
        chat_config = read_chat_config(model_dir)
        model = chat_config.model_config
        params = load_params(model_dir, chat_config)
        logical = restore_logical(params, model, QUANTIZATIONS[chat_config.quantization])
        q_rows = model.num_attention_heads * model.head_dim
        kv_rows = model.num_key_value_heads * model.head_dim
        splits = {
            "qkv_proj": (("q_proj", "k_proj", "v_proj"), (q_rows, q_rows + kv_rows)),
            "c_attn": (("q_proj", "k_proj", "v_proj"), (q_rows, q_rows + kv_rows)),
            "gate_up_proj": (("gate_proj", "up_proj"), (model.intermediate_size,)),
        }
        hf: dict = {}
        for name, array in logical.items():
            module, _, suffix = name.rpartition(".")
            parent, _, leaf = module.rpartition(".")
            array = array.astype("float32")
            if leaf in splits:
                parts, cuts = splits[leaf]
                for part, piece in zip(parts, _split_rows(array, cuts)):
                    hf[f"{parent}.{part}.{suffix}"] = piece
            else:
                hf[name] = array
        return hf

    return weights


def _split_rows(array, cuts):
    import numpy as np

    return np.split(array, list(cuts), axis=0)


INT8_ISAS = ["avx512-vnni", "avx-vnni", "avx2"]
"""The x86 int8 kernel variants; the `isa` fixture runs a test once for each the host has."""


@pytest.fixture(scope="session")
def host_target():
    import tvm

    return tvm.target.Target.from_device(tvm.cpu())


@pytest.fixture(params=INT8_ISAS)
def isa(request, host_target):
    """Each int8 variant this CPU can run."""
    from engine.tvm_backend.int8_kernels import available_isas

    if request.param not in available_isas(host_target):
        pytest.skip(f"this CPU lacks the instructions of the {request.param} variant")
    return request.param
