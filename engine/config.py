"""A model directory's configuration: the architecture (ModelConfig), the chat settings
(ChatConfig) read from mlc-chat-config.json or from a Hugging Face config.json, and the model's
own generation defaults (mlc-chat-config.json, generation_config.json, Ollama params)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelFileError
from engine.quantization import QUANTIZATIONS
from engine.api import SETTING_NAMES, check_setting
from engine.sampling import SamplingParams, params_from
from engine.templates import ConvTemplate, template_from_config

CHAT_CONFIG_FILE = "mlc-chat-config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
OLLAMA_SETTING_NAMES = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
    "repeat_penalty": "repetition_penalty",
}  # fmt: skip
"""Ollama's `params` keys for the generation settings, and Tandem's names for them."""
GGUF_SETTING_NAMES = {
    "general.sampling.temp": "temperature", "general.sampling.top_p": "top_p", "general.sampling.top_k": "top_k",
    "general.sampling.min_p": "min_p", "general.sampling.penalty_repeat": "repetition_penalty",
}  # fmt: skip
"""The GGUF metadata keys llama.cpp's converter writes a model's recommended sampling under."""
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
    top_k: int = 0
    """0 keeps every token (MLC's own config has no top_k; Tandem reads and writes it)."""
    min_p: float = 0.0
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
            "top_k": self.top_k,
            "min_p": self.min_p,
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
    if not isinstance(quantization, str) or (quantization not in QUANTIZATIONS and quantization != GGUF_QUANTIZATION):
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
        **_sampling_fields(data, path),
        presence_penalty=float(data.get("presence_penalty", 0.0)),
        frequency_penalty=float(data.get("frequency_penalty", 0.0)),
        bos_token_id=_optional_int(data.get("bos_token_id")),
        eos_token_ids=_int_tuple(data.get("eos_token_id")),
        pad_token_id=_optional_int(data.get("pad_token_id")),
        tokenizer_info=dict(data.get("tokenizer_info") or {}),
        tandem=dict(data.get("tandem") or {}),
    )


def _sampling_fields(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The ChatConfig sampling fields (neutral where absent); a bad one is a ModelFileError."""
    values: dict[str, Any] = {}
    _collect(values, data, path)
    params = params_from(values)
    return {name: getattr(params, name) for name in SETTING_NAMES}


def read_generation_defaults(model_dir: Path | str) -> SamplingParams:
    """The model's own sampling settings: each one mlc-chat-config.json sets, else the one
    generation_config.json sets (where `"do_sample": false` means greedy, as in transformers),
    else the neutral value. A bad value is a ModelFileError naming the file and the key."""
    folder = Path(model_dir)
    values: dict[str, Any] = {}
    chat_path = folder / CHAT_CONFIG_FILE
    chat = read_json(chat_path, what="an MLC model directory (make one with `tandem models convert`)")
    _collect(values, chat, chat_path)
    generation_path = folder / GENERATION_CONFIG_FILE
    if generation_path.is_file():
        generation = read_json(generation_path, what="the model directory")
        _collect(values, generation_settings(generation), generation_path)
    return params_from(values)


def generation_settings(generation_config: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling settings a Hugging Face generation_config.json dict holds. transformers
    decodes greedily when it says `"do_sample": false`, whatever its temperature says."""
    if generation_config.get("do_sample") is False:
        return {"temperature": 0.0}
    return {name: generation_config[name] for name in SETTING_NAMES if generation_config.get(name) is not None}


def settings_from_ollama_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The generation settings in an Ollama `params` layer (temperature, top_p, top_k, min_p,
    repeat_penalty), under Tandem's names, for an importer to write into mlc-chat-config.json.
    Ollama's top_k <= 0 means no limit, as Tandem's 0 does. Other keys (stop, num_ctx) are left."""
    return _renamed_settings(params, OLLAMA_SETTING_NAMES, "Ollama params", "Fix the Modelfile's PARAMETER.")


def settings_from_gguf_metadata(metadata: Mapping[str, Any], source: str = "the GGUF file") -> dict[str, Any]:
    """The sampling settings a GGUF recommends (`general.sampling.temp`, `.top_p`, `.top_k`,
    `.min_p`, `.penalty_repeat`), under Tandem's names, for an importer to write into
    mlc-chat-config.json; {} for the many files that carry none."""
    return _renamed_settings(metadata, GGUF_SETTING_NAMES, source, "Re-convert the file or edit its metadata.")


def _renamed_settings(values: Mapping[str, Any], names: Mapping[str, str], source: str, fix: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for their_name, name in names.items():
        value = values.get(their_name)
        if value is None:
            continue
        if name == "top_k" and isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            value = 0  # no limit
        problem = check_setting(name, value)
        if problem:
            raise ModelFileError(f"{source}: {their_name} is {value!r}, but {problem}. {fix}")
        found[name] = int(value) if name == "top_k" else float(value)
    return found


def _collect(values: dict[str, Any], source: Mapping[str, Any], path: Path) -> None:
    """Add the settings `source` holds that `values` does not have yet, checked."""
    for name in SETTING_NAMES:
        value = source.get(name)
        if name in values or value is None:
            continue
        if name == "top_k" and isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            value = 0  # vLLM and llama.cpp write -1 for "no limit"
        problem = check_setting(name, value)
        if problem:
            raise ModelFileError(f"{path}: {problem}; fix {name} there.")
        values[name] = value
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
    nested = data.get("rope_parameters")
    rope: Mapping[str, Any] = nested if isinstance(nested, Mapping) else {}
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
