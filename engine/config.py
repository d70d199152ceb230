"""A model directory's configuration: the architecture (ModelConfig) and the chat settings
(ChatConfig) read from mlc-chat-config.json or from a Hugging Face config.json."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelFileError
from engine.quantization import QUANTIZATIONS
from engine.templates import ConvTemplate, template_from_config

CHAT_CONFIG_FILE = "mlc-chat-config.json"
GGUF_QUANTIZATION = "gguf"
"""A model directory that runs a GGUF file as it is: its mlc-chat-config.json says
"quantization": "gguf" and names the file in "tandem": {"gguf": {"path": ...}}."""
SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
SUPPORTED_ROPE_TYPES = ("llama3", "linear")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a Llama-family decoder."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Mapping[str, Any] | None
    """None for plain RoPE; else a dict with "rope_type" ("llama3" or "linear") and its factors."""
    tie_word_embeddings: bool
    attention_bias: bool
    """A bias on the fused q/k/v projection (always in qwen2)."""
    max_position_embeddings: int

    def to_dict(self) -> dict[str, Any]:
        """The `model_config` of mlc-chat-config.json (with MLC's alias for rope_theta)."""
        data = {
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": dict(self.rope_scaling) if self.rope_scaling else None,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "max_position_embeddings": self.max_position_embeddings,
        }
        if self.model_type == "llama":
            data["position_embedding_base"] = self.rope_theta
        return data


@dataclass(frozen=True)
class ChatConfig:
    """Everything in mlc-chat-config.json that running a model needs."""

    model_config: ModelConfig
    model_type: str
    quantization: str
    vocab_size: int
    context_window_size: int
    prefill_chunk_size: int
    sliding_window_size: int
    """-1 when the model has no sliding window."""
    conv_template: ConvTemplate
    tokenizer_files: tuple[str, ...] = ("tokenizer.json",)
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    tokenizer_info: Mapping[str, Any] = field(default_factory=dict)
    tandem: Mapping[str, Any] = field(default_factory=dict)
    """Tandem's own extras, e.g. {"refusal": "...", "skills": [...]} for the embedded model."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": "0.1.0",
            "model_type": self.model_type,
            "quantization": self.quantization,
            "model_config": self.model_config.to_dict(),
            "vocab_size": self.vocab_size,
            "context_window_size": self.context_window_size,
            "sliding_window_size": self.sliding_window_size,
            "prefill_chunk_size": self.prefill_chunk_size,
            "attention_sink_size": -1,
            "tensor_parallel_shards": 1,
            "temperature": self.temperature,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty,
            "top_p": self.top_p,
            "tokenizer_files": list(self.tokenizer_files),
            "tokenizer_info": dict(self.tokenizer_info),
            "conv_template": self.conv_template.to_dict(),
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_ids),
        }
        if self.tandem:
            data["tandem"] = dict(self.tandem)
        return data


def read_chat_config(model_dir: Path | str) -> ChatConfig:
    """Read and check <model_dir>/mlc-chat-config.json; ModelFileError names the file and the fix."""
    path = Path(model_dir) / CHAT_CONFIG_FILE
    data = read_json(path, what="an MLC model directory (make one with `tandem models convert`)")
    source = str(path)
    model_type = _model_type(data, source)
    quantization = data.get("quantization")
    if quantization not in QUANTIZATIONS and quantization != GGUF_QUANTIZATION:
        raise ModelFileError(
            f"{source}: quantization {quantization!r} is not supported; Tandem runs "
            f"{', '.join(QUANTIZATIONS)} and {GGUF_QUANTIZATION}. Re-convert the model with "
            "`tandem models convert HF_DIR OUT_DIR --quantization q4f16_1`."
        )
    if quantization == GGUF_QUANTIZATION:
        _check_gguf_reference(data, source)
    raw_model_config = data.get("model_config")
    if not isinstance(raw_model_config, Mapping):
        raise ModelFileError(f"{source}: the \"model_config\" section is missing; re-convert the model.")
    model_config = _model_config(raw_model_config, model_type, source)
    try:
        conv_template = template_from_config(data.get("conv_template", "chatml"))
    except (KeyError, ValueError) as error:
        raise ModelFileError(f"{source}: {error.args[0]}. Fix conv_template or re-convert the model.") from None
    context_window = int(data.get("context_window_size") or model_config.max_position_embeddings)
    return ChatConfig(
        model_config=model_config,
        model_type=model_type,
        quantization=quantization,
        vocab_size=int(data.get("vocab_size", model_config.vocab_size)),
        context_window_size=context_window,
        prefill_chunk_size=int(data.get("prefill_chunk_size") or min(context_window, 2048)),
        sliding_window_size=int(data.get("sliding_window_size", -1) or -1),
        conv_template=conv_template,
        tokenizer_files=tuple(data.get("tokenizer_files") or ("tokenizer.json",)),
        temperature=float(data.get("temperature", 1.0)),
        top_p=float(data.get("top_p", 1.0)),
        repetition_penalty=float(data.get("repetition_penalty", 1.0)),
        presence_penalty=float(data.get("presence_penalty", 0.0)),
        frequency_penalty=float(data.get("frequency_penalty", 0.0)),
        bos_token_id=_optional_int(data.get("bos_token_id")),
        eos_token_ids=_int_tuple(data.get("eos_token_id")),
        pad_token_id=_optional_int(data.get("pad_token_id")),
        tokenizer_info=dict(data.get("tokenizer_info") or {}),
        tandem=dict(data.get("tandem") or {}),
    )


def _check_gguf_reference(data: Mapping[str, Any], source: str) -> None:
    tandem = data.get("tandem")
    reference = tandem.get("gguf") if isinstance(tandem, Mapping) else None
    path = reference.get("path") if isinstance(reference, Mapping) else None
    if not isinstance(path, str) or not path:
        raise ModelFileError(
            f"{source}: quantization \"gguf\" needs the file it runs in \"tandem\": "
            "{\"gguf\": {\"path\": ...}}; import the model again with `tandem models import PATH.gguf`."
        )


def write_chat_config(config: ChatConfig, model_dir: Path | str) -> Path:
    path = Path(model_dir) / CHAT_CONFIG_FILE
    path.write_text(json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def model_config_from_hf(config: Mapping[str, Any], source: str = "config.json") -> ModelConfig:
    """The architecture from a Hugging Face config.json dict (transformers 4 or 5 layout)."""
    return _model_config(config, _model_type(config, source), source)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a file, or a ModelFileError naming the file; `what` says where it belongs."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path} is missing; it is needed in {what}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path} cannot be read ({error}); restore or re-create the file.") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} does not hold a JSON object; restore or re-create the file.")
    return data


def _model_type(data: Mapping[str, Any], source: str) -> str:
    model_type = data.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelFileError(
            f"{source}: model_type {model_type!r} is not supported; Tandem runs "
            f"{' and '.join(SUPPORTED_MODEL_TYPES)} models. Use a Llama or Qwen2 checkpoint."
        )
    return model_type


def _model_config(data: Mapping[str, Any], model_type: str, source: str) -> ModelConfig:
    def required_int(key: str) -> int:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelFileError(f"{source}: {key!r} must be a positive integer (found {value!r}); fix the config.")
        return value

    hidden = required_int("hidden_size")
    heads = required_int("num_attention_heads")
    kv_heads = int(data.get("num_key_value_heads") or heads)
    head_dim = int(data.get("head_dim") or hidden // heads)
    if heads % kv_heads:
        raise ModelFileError(f"{source}: {heads} attention heads do not split into {kv_heads} key/value heads.")
    if model_type == "llama" and (data.get("attention_bias") or data.get("mlp_bias")):
        raise ModelFileError(f"{source}: Llama models with attention_bias or mlp_bias are not supported.")
    # transformers 5 nests RoPE settings in rope_parameters; older configs keep them at the top.
    rope = data.get("rope_parameters") if isinstance(data.get("rope_parameters"), Mapping) else {}
    rope_theta = rope.get("rope_theta", data.get("rope_theta", data.get("position_embedding_base") or 10000.0))
    scaling = data.get("rope_scaling") if isinstance(data.get("rope_scaling"), Mapping) else rope
    return ModelConfig(
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=required_int("intermediate_size"),
        num_hidden_layers=required_int("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=required_int("vocab_size"),
        rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope_theta),
        rope_scaling=_rope_scaling(scaling, source),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        attention_bias=model_type == "qwen2",
        max_position_embeddings=int(data.get("max_position_embeddings") or data.get("context_window_size") or 2048),
    )


def _rope_scaling(scaling: Mapping[str, Any] | None, source: str) -> dict[str, Any] | None:
    if not scaling:
        return None
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return None
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelFileError(
            f"{source}: RoPE scaling {rope_type!r} is not supported (only {', '.join(SUPPORTED_ROPE_TYPES)})."
        )
    kept = {key: value for key, value in scaling.items() if key not in ("rope_theta", "type")}
    kept["rope_type"] = rope_type
    return kept


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _int_tuple(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)
