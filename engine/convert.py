"""Hugging Face checkpoint -> MLC model directory: fuse q/k/v and gate/up, quantize, write the
tensor cache, mlc-chat-config.json (with a chat template fit to the tokenizer) and the tokenizer."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.artifact import write_tensor_cache
from engine.config import ChatConfig, ModelConfig, generation_settings, write_chat_config
from engine.errors import ModelFileError
from engine.hf_checkpoint import HFCheckpoint
from engine.layout import LogicalTensor, logical_tensors
from engine.quantization import QUANTIZATIONS, Quantization, TensorKind
from engine.staging import staged_directory
from engine.templates import BUILTIN_TEMPLATES, ConvTemplate, builtin_template
from engine.tokenizer import TOKENIZER_FILE, Tokenizer

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
    "added_tokens.json", "special_tokens_map.json", "chat_template.jinja",
)  # fmt: skip
DEFAULT_CONTEXT_CAP = 8192
"""Longer native windows are capped by default: the KV cache grows with the window."""
_REQUIRED_TOKENS = {
    "llama-3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "qwen2": ("<|im_start|>", "<|im_end|>"),
    "phi-3": ("<|user|>", "<|assistant|>", "<|end|>"),
    "tinyllama_v1_0": ("</s>",),
}
"""The single tokens each built-in template's markup relies on; a tokenizer without them was
not trained on that format."""

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class ConversionResult:
    out_dir: Path
    chat_config: ChatConfig
    tensor_count: int
    """Logical tensors converted (a quantized one is stored as two arrays)."""
    weight_bytes: int
    """Bytes of the params_shard files."""


def convert_hf_checkpoint(
    hf_dir: Path | str,
    out_dir: Path | str,
    quantization: str = "q4f16_1",
    *,
    conv_template: str | None = None,
    context_window: int | None = None,
    overwrite: bool = False,
    tandem_extras: Mapping[str, Any] | None = None,
    on_progress: Progress | None = None,
) -> ConversionResult:
    """Convert and write. On any failure nothing is left at `out_dir`; a model already there
    (with `overwrite`) is replaced only once the new one is complete.

    `tandem_extras` becomes the "tandem" section of mlc-chat-config.json (the embedded model's
    refusal sentence and skills)."""
    if quantization not in QUANTIZATIONS:
        raise ModelFileError(f"Unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}.")
    report = on_progress or (lambda message, fraction: None)
    out = Path(out_dir)
    _check_destination(out, Path(hf_dir), overwrite)
    checkpoint = HFCheckpoint(hf_dir)
    tokenizer_path = checkpoint.folder / TOKENIZER_FILE
    if not tokenizer_path.is_file():
        raise ModelFileError(f"{tokenizer_path} is missing; Tandem needs the model's fast tokenizer (tokenizer.json).")
    tokenizer = Tokenizer(tokenizer_path)
    chat_config = replace(
        _chat_config(checkpoint, tokenizer, quantization, conv_template, context_window),
        tandem=dict(tandem_extras or {}),
    )
    tensors = logical_tensors(checkpoint.model_config)
    for tensor in tensors:  # check every source before writing anything
        _check_sources(checkpoint, tensor)

    with staged_directory(out) as staging:
        arrays = _stored_arrays(checkpoint, tensors, QUANTIZATIONS[quantization], report)
        write_tensor_cache(staging, arrays, metadata={"Quantization": quantization})
        write_chat_config(chat_config, staging)
        for name in chat_config.tokenizer_files:
            shutil.copy2(checkpoint.folder / name, staging / name)
    report("done", 1.0)
    shards = out.glob("params_shard_*.bin")
    return ConversionResult(out, chat_config, len(tensors), sum(shard.stat().st_size for shard in shards))


def choose_template(checkpoint: HFCheckpoint, tokenizer: Tokenizer, name: str | None = None) -> ConvTemplate:
    """The built-in template that matches the tokenizer's own chat template (or the one named),
    with the stop and prefix token ids of this tokenizer."""
    if name is not None:
        try:
            template = builtin_template(name)
        except KeyError as error:
            raise ModelFileError(f"{error.args[0]}.") from None
    else:
        template = builtin_template(_guess_template_name(checkpoint, tokenizer))
    missing = [t for t in _REQUIRED_TOKENS.get(template.name, ()) if tokenizer.token_to_id(t) is None]
    if missing:
        raise ModelFileError(
            f"{checkpoint.folder / TOKENIZER_FILE} lacks {', '.join(sorted(set(missing)))}, which the "
            f"{template.name} template needs; choose another with --conv-template "
            f"({', '.join(BUILTIN_TEMPLATES)})."
        )
    found = [tokenizer.token_to_id(s) for s in template.stop_str]
    stop_ids = [i for i in found if i is not None] + list(_eos_token_ids(checkpoint, tokenizer))
    prefix: list[int] = []
    if template.system_prefix_token_ids:
        bos = _bos_token_id(checkpoint, tokenizer)
        prefix = [] if bos is None else [bos]
    return template.with_token_ids(list(dict.fromkeys(stop_ids)), prefix)


def _guess_template_name(checkpoint: HFCheckpoint, tokenizer: Tokenizer) -> str:
    chatml = "qwen2" if checkpoint.model_config.model_type == "qwen2" else "chatml"
    markers = (("<|start_header_id|>", "llama-3"), ("<|im_start|>", chatml), ("<|end|>", "phi-3"))
    text = checkpoint.chat_template_text()
    for marker, template in markers:
        if marker in text:
            return template
    if "<|assistant|>" in text:  # Zephyr-style markers without phi-3's <|end|>
        return "tinyllama_v1_0"
    for marker, template in markers:  # no chat template: go by the tokenizer's special tokens
        if tokenizer.token_to_id(marker) is not None:
            return template
    raise ModelFileError(
        f"{checkpoint.folder}: cannot tell the model's chat format from its tokenizer; "
        f"name one with --conv-template ({', '.join(BUILTIN_TEMPLATES)})."
    )


def _chat_config(
    checkpoint: HFCheckpoint, tokenizer: Tokenizer, quantization: str, template_name: str | None, context: int | None
) -> ChatConfig:
    model = checkpoint.model_config
    if tokenizer.vocab_size > model.vocab_size:
        raise ModelFileError(
            f"{checkpoint.folder / TOKENIZER_FILE} has {tokenizer.vocab_size} tokens but config.json's vocab_size "
            f"is {model.vocab_size}; the tokenizer does not belong to this model."
        )
    generation = generation_settings(checkpoint.optional_json("generation_config.json"))
    window = context or min(model.max_position_embeddings, DEFAULT_CONTEXT_CAP)
    sliding = checkpoint.config.get("sliding_window") if checkpoint.config.get("use_sliding_window") else None
    return ChatConfig(
        model_config=model,
        model_type=model.model_type,
        quantization=quantization,
        vocab_size=model.vocab_size,
        context_window_size=window,
        prefill_chunk_size=min(window, 2048),
        sliding_window_size=int(sliding) if sliding else -1,
        conv_template=choose_template(checkpoint, tokenizer, template_name),
        tokenizer_files=tuple(name for name in TOKENIZER_FILES if (checkpoint.folder / name).is_file()),
        temperature=float(generation.get("temperature", 1.0)),
        top_p=float(generation.get("top_p", 1.0)),
        top_k=max(int(generation.get("top_k", 0)), 0),
        min_p=float(generation.get("min_p", 0.0)),
        repetition_penalty=float(generation.get("repetition_penalty", 1.0)),
        bos_token_id=_bos_token_id(checkpoint, tokenizer),
        eos_token_ids=_eos_token_ids(checkpoint, tokenizer),
        pad_token_id=_token_id(checkpoint, tokenizer, "pad"),
        tokenizer_info={
            "token_postproc_method": "byte_level" if tokenizer.byte_level else "byte_fallback",
            "prepend_space_in_encode": False,
            "strip_space_in_decode": False,
        },
    )


def _bos_token_id(checkpoint: HFCheckpoint, tokenizer: Tokenizer) -> int | None:
    return _token_id(checkpoint, tokenizer, "bos")


def _token_id(checkpoint: HFCheckpoint, tokenizer: Tokenizer, kind: str) -> int | None:
    for source in (checkpoint.optional_json("generation_config.json"), checkpoint.config):
        value = source.get(f"{kind}_token_id")
        if isinstance(value, int):
            return value
    token = checkpoint.special_token(f"{kind}_token")
    return None if token is None else tokenizer.token_to_id(token)


def _eos_token_ids(checkpoint: HFCheckpoint, tokenizer: Tokenizer) -> tuple[int, ...]:
    ids: list[int] = []
    for source in (checkpoint.optional_json("generation_config.json"), checkpoint.config):
        value = source.get("eos_token_id")
        ids += value if isinstance(value, list) else [value] if isinstance(value, int) else []
    token = checkpoint.special_token("eos_token")
    if token is not None and (token_id := tokenizer.token_to_id(token)) is not None:
        ids.append(token_id)
    return tuple(dict.fromkeys(ids))


def _check_destination(out: Path, hf_dir: Path, overwrite: bool) -> None:
    source = hf_dir.resolve()
    if out.resolve() == source or out.resolve() in source.parents:
        raise ModelFileError(f"{out} holds the checkpoint being converted; write the model to another folder.")
    if out.exists() and not out.is_dir():
        raise ModelFileError(f"{out} is a file; give a folder to write the model into.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ModelFileError(f"{out} already exists and is not empty; choose a new folder or pass --overwrite.")


def _hf_names(tensor: LogicalTensor) -> list[str]:
    suffix = ".bias" if tensor.kind is TensorKind.BIAS else ".weight"
    parent, _, leaf = tensor.module.rpartition(".")
    if leaf in ("qkv_proj", "c_attn"):
        return [f"{parent}.{p}{suffix}" for p in ("q_proj", "k_proj", "v_proj")]
    if leaf == "gate_up_proj":
        return [f"{parent}.{p}{suffix}" for p in ("gate_proj", "up_proj")]
    return [tensor.module + suffix]


def _check_sources(checkpoint: HFCheckpoint, tensor: LogicalTensor) -> None:
    names = _hf_names(tensor)
    missing = [name for name in names if not checkpoint.has(name)]
    if missing:
        hint = " (config.json says the embeddings are untied)" if tensor.module == "lm_head" else ""
        raise ModelFileError(
            f"{checkpoint.folder}: the safetensors files lack {', '.join(missing)}{hint}; the checkpoint is "
            "incomplete or does not match its config.json."
        )
    rows = sum(checkpoint.shape(name)[0] for name in names)
    shape = (rows, *checkpoint.shape(names[0])[1:])
    if shape != tensor.shape:
        raise ModelFileError(
            f"{checkpoint.folder}: {', '.join(names)} make a {list(shape)} tensor but config.json implies "
            f"{list(tensor.shape)}; the weights do not match their config.json."
        )


def _stored_arrays(
    checkpoint: HFCheckpoint, tensors: list[LogicalTensor], quantization: Quantization, report: Progress
) -> Iterator[tuple[str, np.ndarray]]:
    for index, tensor in enumerate(tensors):
        report(f"{tensor.name} -> {quantization.name}", index / len(tensors))
        parts = [checkpoint.tensor(name) for name in _hf_names(tensor)]
        logical = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        for suffix, array in quantization.store(tensor.kind, logical).items():
            yield tensor.module + suffix, array


def describe(model: ModelConfig) -> str:
    """A one-line summary of an architecture, for progress output."""
    tied = "tied" if model.tie_word_embeddings else "untied"
    return (
        f"{model.model_type}: {model.num_hidden_layers} layers, hidden {model.hidden_size}, "
        f"{model.num_attention_heads} heads / {model.num_key_value_heads} KV, "
        f"vocab {model.vocab_size}, {tied} embeddings"
    )
