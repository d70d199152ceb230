"""A GGUF file -> a Tandem model directory: mlc-chat-config.json (quantization "gguf", the
architecture, the file's path and the route its tensors take), tokenizer.json and
tokenizer_config.json. The GGUF is referenced where it lies (or copied in as model.gguf);
everything is written into a staging folder and renamed at the end."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.api import SETTING_NAMES
from engine.config import CHAT_CONFIG_FILE, GGUF_SETTING_NAMES, ChatConfig, ModelConfig
from engine.convert import DEFAULT_CONTEXT_CAP
from engine.errors import ModelFileError
from engine.gguf.model_config import model_config_from_gguf
from engine.gguf.reader import GGUFFile
from engine.gguf.tensors import TensorPlan, plan_tensors
from engine.gguf.tokenizer import special_token_id, tokenizer_config, tokenizer_from_gguf
from engine.staging import staged_directory
from engine.templates import ConvTemplate, builtin_template

QUANTIZATION = "gguf"
COPIED_NAME = "model.gguf"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_ALIASES = {"repeat_penalty": "repetition_penalty", "temp": "temperature"}
"""Ollama's params and llama.cpp's general.sampling keys spell two settings differently."""
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class TensorRoute:
    """The route one logical tensor took, for the per-file report."""

    name: str
    sources: tuple[str, ...]
    source_types: tuple[str, ...]
    format: str
    route: str
    source_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class ImportResult:
    name: str
    """The model's name from the file's metadata (general.name), else the file's stem."""
    out_dir: Path
    gguf_path: Path
    """The GGUF the directory runs: the original (referenced) or its copy inside out_dir."""
    copied: bool
    route: str
    """One line for people: which route the tensors took and what it costs in size."""
    tensor_types: dict[str, int]
    file_bytes: int
    """The GGUF's size on disk."""
    weight_bytes: int
    """The model's weights as the file stores them (a tied embedding counted once)."""
    runtime_bytes: int
    """The same weights in the formats the runtime holds them in."""
    tensors: tuple[TensorRoute, ...]
    chat_config: dict[str, Any]
    """What was written to mlc-chat-config.json."""


def import_gguf(
    gguf_path: Path | str,
    out_dir: Path | str,
    *,
    reference: bool = True,
    generation_defaults: Mapping[str, float] | None = None,
    system_prompt: str | None = None,
    overwrite: bool = False,
    on_progress: Progress | None = None,
    sha256: str | None = None,
) -> ImportResult:
    """Check the whole file, then write the model directory. An empty `out_dir` (or any, with
    `overwrite`) is replaced only once the new one is complete; on failure nothing is left.
    `sha256` is the file's digest where the caller already knows it (an Ollama blob is named by
    it, a Hub download was just checked against it): reading gigabytes again is then skipped."""
    report = on_progress or (lambda stage, fraction: None)
    out = Path(out_dir)
    report("reading", 0.0)
    gguf = GGUFFile(gguf_path)
    _check_destination(out, gguf.path, overwrite)
    model = model_config_from_gguf(gguf)
    plans = plan_tensors(gguf, model)  # every tensor present, shaped and readable
    report("tokenizer", 0.3)
    tokenizer = tokenizer_from_gguf(gguf)
    if tokenizer.get_vocab_size(with_added_tokens=True) > model.vocab_size:
        raise ModelFileError(
            f"{gguf.path}: the tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} tokens but the "
            f"model's embedding only {model.vocab_size}; the file is inconsistent. Re-export it."
        )
    tokens_config = tokenizer_config(gguf)
    settings = _sampling(gguf, generation_defaults)
    tensor_types = dict(Counter(tensor.type_name for tensor in gguf.tensors.values()).most_common())
    routes = tuple(_route(plan) for plan in plans)
    route = route_line(routes)

    digest = sha256.lower() if sha256 else _sha256(gguf.path)
    with staged_directory(out) as staging:
        report("writing", 0.5)
        tokenizer.save(str(staging / "tokenizer.json"))
        _write_json(staging / "tokenizer_config.json", tokens_config)
        if reference:
            recorded = str(gguf.path)
        else:
            _copy(gguf.path, staging / COPIED_NAME, report)
            recorded = COPIED_NAME  # relative to the model directory, so renaming it keeps it valid
        chat = _chat_config(gguf, model, tokenizer, tokens_config, system_prompt)
        data = chat.to_dict()
        data.update(settings)
        data["tandem"] = {
            "gguf": {
                "path": recorded,
                "sha256": digest,  # the file's identity: a model's calibration is keyed on it
                "tensor_types": tensor_types,
                "route": route,
                "routes": dict(Counter(r.route for r in routes)),
                "weight_bytes": sum(r.source_bytes for r in routes),
                "runtime_bytes": sum(r.stored_bytes for r in routes),
            },
            **({"system_prompt": system_prompt} if system_prompt else {}),
        }
        _write_json(staging / CHAT_CONFIG_FILE, data)
    report("done", 1.0)
    return ImportResult(
        name=str(gguf.get("general.name") or gguf.path.stem),
        out_dir=out,
        gguf_path=gguf.path if reference else out / COPIED_NAME,
        copied=not reference,
        route=route,
        tensor_types=tensor_types,
        file_bytes=gguf.path.stat().st_size,
        weight_bytes=sum(r.source_bytes for r in routes),
        runtime_bytes=sum(r.stored_bytes for r in routes),
        tensors=routes,
        chat_config=data,
    )


def gguf_path_of(model_dir: Path | str, chat_config: Mapping[str, Any]) -> Path:
    """The GGUF a model directory runs: tandem.gguf.path, relative paths against the directory."""
    try:
        recorded = Path(str(chat_config["tandem"]["gguf"]["path"]))
    except (KeyError, TypeError):
        raise ModelFileError(
            f"{Path(model_dir) / CHAT_CONFIG_FILE} names no GGUF file (tandem.gguf.path); import the model again "
            "with `tandem models import FILE.gguf`."
        ) from None
    path = recorded if recorded.is_absolute() else Path(model_dir) / recorded
    if not path.is_file():
        raise ModelFileError(
            f"{path} is missing: the model in {model_dir} runs that GGUF file in place. Put it back, or import "
            "the model again (`tandem models import`, which can also copy the file in)."
        )
    return path


def route_line(routes: tuple[TensorRoute, ...] | list[TensorRoute]) -> str:
    """Counted in the file's own tensors, e.g. "as stored: 210 Q4_1, 61 F32, 1 Q8_0 (96.6 MB)", or
    with what the other routes cost: "as stored: 5 F32; re-quantized to q8_0: 10 Q4_K, 4 Q6_K;
    0.8 MB in the file -> 1.3 MB in memory (+64%)"."""

    def counted(route: str) -> str:
        types = Counter(t for r in routes if r.route == route for t in r.source_types)
        return ", ".join(f"{count} {kind}" for kind, count in types.most_common())

    labels = {"native": "as stored", "widened": "widened to f32", "requantized": "re-quantized to q8_0"}
    parts = [f"{label}: {counted(route)}" for route, label in labels.items() if any(r.route == route for r in routes)]
    source = sum(r.source_bytes for r in routes)
    stored = sum(r.stored_bytes for r in routes)
    if stored == source:
        return f"{'; '.join(parts)} ({_size(source)})"
    change = (stored - source) / source * 100 if source else 0.0
    return f"{'; '.join(parts)}; {_size(source)} in the file -> {_size(stored)} in memory ({change:+.0f}%)"


def _route(plan: TensorPlan) -> TensorRoute:
    return TensorRoute(
        name=plan.logical.name,
        sources=tuple(source.name for source in plan.sources),
        source_types=plan.source_types,
        format=plan.format,
        route=plan.route,
        source_bytes=plan.source_bytes,
        stored_bytes=plan.stored_bytes,
    )


LLAMA_CPP_SAMPLING: Mapping[str, float | int] = {
    "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repetition_penalty": 1.0,
}
"""What llama.cpp samples with when neither the file nor the user says otherwise: a GGUF then
behaves in Tandem as its users know it from llama.cpp (plain temperature 1 rambles and loops)."""


def _sampling(gguf: GGUFFile, given: Mapping[str, float] | None) -> dict[str, float | int]:
    """llama.cpp's defaults, then the file's own general.sampling.* values, then the ones given
    (Ollama params) on top."""
    values: dict[str, float | int] = dict(LLAMA_CPP_SAMPLING)
    for key, name in GGUF_SETTING_NAMES.items():
        value = gguf.get(key)
        if value is not None:
            values[name] = _number(name, value, f"{gguf.path}: metadata {key}")
    for key, value in (given or {}).items():
        name = _ALIASES.get(key, key)
        if name not in SETTING_NAMES:
            raise ModelFileError(
                f"generation default {key!r} is not a setting Tandem applies; give {', '.join(SETTING_NAMES)}."
            )
        values[name] = _number(name, value, "generation defaults")
    return values


def _number(name: str, value: Any, where: str) -> float | int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelFileError(f"{where}: {name} must be a number (found {value!r}).") from None
    if number < 0 or number != number:
        raise ModelFileError(f"{where}: {name} must be a non-negative number (found {value!r}).")
    return int(number) if name == "top_k" else number


def _chat_config(
    gguf: GGUFFile, model: ModelConfig, tokenizer: Any, tokens_config: Mapping[str, Any], system_prompt: str | None
) -> ChatConfig:
    window = min(model.max_position_embeddings, DEFAULT_CONTEXT_CAP)
    bos, eos = special_token_id(gguf, "bos"), special_token_id(gguf, "eos")
    template = _conv_template(model, tokenizer, str(tokens_config.get("chat_template") or ""), bos, eos)
    if system_prompt:
        template = replace(template, system_message=system_prompt)
    return ChatConfig(
        model_config=model,
        model_type=model.model_type,
        quantization=QUANTIZATION,
        vocab_size=model.vocab_size,
        context_window_size=window,
        prefill_chunk_size=min(window, 2048),
        sliding_window_size=-1,
        conv_template=template,
        tokenizer_files=TOKENIZER_FILES,
        bos_token_id=bos,
        eos_token_ids=() if eos is None else (eos,),
        pad_token_id=special_token_id(gguf, "pad"),
        tokenizer_info={
            "token_postproc_method": "byte_level" if gguf.get("tokenizer.ggml.model") == "gpt2" else "byte_fallback",
            "prepend_space_in_encode": False,
            "strip_space_in_decode": False,
        },
    )


def _conv_template(model: ModelConfig, tokenizer: Any, jinja: str, bos: int | None, eos: int | None) -> ConvTemplate:
    """MLC's conversation template, used only where the Jinja chat template is not rendered:
    the built-in one whose markers the file's template (else its vocabulary) uses."""
    chatml = "qwen2" if model.model_type == "qwen2" else "chatml"
    markers = (("<|start_header_id|>", "llama-3"), ("<|im_start|>", chatml), ("<|end|>", "phi-3"))
    name = next((template for marker, template in markers if marker in jinja), None)
    if name is None and "<|assistant|>" in jinja:
        name = "tinyllama_v1_0"
    if name is None:
        name = next((t for marker, t in markers if tokenizer.token_to_id(marker) is not None), "chatml")
    template = builtin_template(name)
    stops = [tokenizer.token_to_id(text) for text in template.stop_str]
    stop_ids = list(dict.fromkeys([i for i in stops if i is not None] + ([] if eos is None else [eos])))
    prefix = [bos] if template.system_prefix_token_ids and bos is not None else []
    return template.with_token_ids(stop_ids, prefix)


def _check_destination(out: Path, gguf: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ModelFileError(f"{out} is a file; give a folder to write the model into.")
    if out.is_dir() and (out.resolve() == gguf.parent or out.resolve() in gguf.parents):
        raise ModelFileError(f"{out} holds the GGUF being imported; write the model to another folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ModelFileError(f"{out} already exists and is not empty; choose a new folder or pass overwrite.")


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _copy(source: Path, target: Path, report: Progress) -> None:
    """Copy in chunks, reporting progress from 0.5 to 0.95 (multi-gigabyte files take a while)."""
    total = max(source.stat().st_size, 1)
    done = 0
    chunk = 64 << 20
    with source.open("rb") as reader, target.open("wb") as writer:
        while block := reader.read(chunk):
            writer.write(block)
            done += len(block)
            report("copying", 0.5 + 0.45 * done / total)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
