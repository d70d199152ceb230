"""Reading Ollama's model store ($OLLAMA_MODELS, else ~/.ollama/models): a model's manifest, the
GGUF blob of its model layer, its params (as generation defaults) and its system prompt. Nothing
is copied; the blob is referenced where it lies."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.models.install import InstallError
from engine.config import OLLAMA_SETTING_NAMES

MODEL_LAYER = "application/vnd.ollama.image.model"
PARAMS_LAYER = "application/vnd.ollama.image.params"
SYSTEM_LAYER = "application/vnd.ollama.image.system"
MANIFEST_LIST = "application/vnd.ollama.manifest.list.v2+json"
HOSTS = ("ollama.com", "registry.ollama.ai")
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_PART = re.compile(r"^\w[\w.-]*$")
"""A namespace, model or tag: never "." or "..", which would step out of the store."""


class OllamaError(InstallError):
    """The Ollama model cannot be read; the message says which and what to do."""


@dataclass(frozen=True)
class OllamaModel:
    reference: str
    """"llama3.2:1b" as the user wrote it, with the tag filled in."""
    model: str
    tag: str
    gguf: Path
    manifest: Path
    generation_defaults: dict[str, float] = field(default_factory=dict)
    context_window: int | None = None
    system_prompt: str | None = None

    @property
    def sha256(self) -> str | None:
        """The blob's digest, read from its name: the store is content-addressed, and Ollama
        checks each blob against its name when it pulls it."""
        match = _DIGEST.match(self.gguf.name)
        return match.group(1) if match else None


def store_root() -> Path:
    override = os.environ.get("OLLAMA_MODELS")
    return Path(override).expanduser() if override else Path.home() / ".ollama" / "models"


def parse_reference(text: str) -> tuple[str, str]:
    """"ollama:llama3.2:1b" or "llama3.2" -> (model, tag); the tag defaults to "latest"."""
    body = text.removeprefix("ollama:")
    model, _, tag = body.partition(":")
    tag = tag or "latest"
    parts = model.split("/")
    if not model or not all(_PART.match(p) for p in parts) or len(parts) > 2 or not _PART.match(tag):
        raise OllamaError(
            f"{text!r} is not an Ollama model name; write ollama:NAME or ollama:NAME:TAG (e.g. ollama:llama3.2:1b)."
        )
    return model, tag


def find_model(text: str, root: Path | None = None) -> OllamaModel:
    """Resolve `ollama:NAME[:TAG]` in the store to its GGUF blob and settings."""
    model, tag = parse_reference(text)
    store = root or store_root()
    if not store.is_dir():
        raise OllamaError(
            f"No Ollama store at {store}. Set OLLAMA_MODELS to the folder Ollama keeps its models in "
            "(it holds blobs/ and manifests/)."
        )
    manifest_path = _manifest_path(store, model, tag)
    manifest = _read_manifest(manifest_path, store)
    layers = _model_layers(manifest, manifest_path, store)
    blob = _blob(store, layers[MODEL_LAYER], manifest_path)
    with blob.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise OllamaError(
                f"{blob} (the model layer of {model}:{tag}) is not a GGUF file; pull it again with Ollama."
            )
    params = _json_layer(store, layers.get(PARAMS_LAYER), manifest_path)
    system = _text_layer(store, layers.get(SYSTEM_LAYER), manifest_path)
    defaults = {
        ours: float(params[theirs]) for theirs, ours in OLLAMA_SETTING_NAMES.items() if _is_number(params.get(theirs))
    }
    context = int(params["num_ctx"]) if _is_number(params.get("num_ctx")) and int(params["num_ctx"]) > 0 else None
    return OllamaModel(f"{model}:{tag}", model, tag, blob, manifest_path, defaults, context, system or None)


def list_models(root: Path | None = None) -> list[OllamaModel]:
    """Every model in the store whose manifest has a GGUF layer (others are skipped)."""
    store = root or store_root()
    seen: dict[str, OllamaModel] = {}
    for base in _manifest_bases(store):
        for path in sorted(base.glob("*/*/*")) if base.is_dir() else ():
            namespace, model, tag = path.relative_to(base).parts
            name = model if namespace == "library" else f"{namespace}/{model}"
            if f"{name}:{tag}" in seen:
                continue
            try:
                seen[f"{name}:{tag}"] = find_model(f"ollama:{name}:{tag}", store)
            except (OllamaError, OSError):
                continue
    return list(seen.values())


def _manifest_bases(store: Path) -> list[Path]:
    return [store / layout / host for layout in ("manifests-v2", "manifests") for host in HOSTS]


def _manifest_path(store: Path, model: str, tag: str) -> Path:
    namespace, _, name = model.rpartition("/")
    relative = Path(namespace or "library") / name / tag
    for base in _manifest_bases(store):
        if (base / relative).is_file():
            return base / relative
    bases = [b for b in _manifest_bases(store) if b.is_dir()]
    available = sorted({f"{p.parent.name}:{p.name}" for b in bases for p in b.glob(f"*/{name}/*")})
    hint = (
        f" Tags there: {', '.join(available)}."
        if available
        else " `ollama list` shows what you have; `ollama pull` gets it."
    )
    raise OllamaError(f"Ollama has no model {model}:{tag} in {store}.{hint}")


def _read_manifest(path: Path, store: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8").strip()
    digest = _DIGEST.match(text)
    if digest:  # a manifest kept as a blob, named by its digest
        path = store / "blobs" / f"sha256-{digest.group(1)}"
        text = path.read_text(encoding="utf-8")
    try:
        manifest = json.loads(text)
    except ValueError as error:
        raise OllamaError(f"{path} is not a readable manifest ({error}); pull the model again with Ollama.") from None
    if not isinstance(manifest, dict):
        raise OllamaError(f"{path} is not a readable manifest; pull the model again with Ollama.")
    return manifest


def _model_layers(manifest: dict[str, Any], path: Path, store: Path) -> dict[str, str]:
    """mediaType -> digest of the manifest's layers; a manifest list is followed to its first
    variant with a GGUF model layer."""
    if manifest.get("mediaType") == MANIFEST_LIST or "manifests" in manifest:
        for entry in manifest.get("manifests") or ():
            digest = entry.get("digest", "") if isinstance(entry, dict) else ""
            blob = store / "blobs" / digest.replace(":", "-")
            if not _DIGEST.match(digest) or not blob.is_file():
                continue
            try:
                layers = _model_layers(_read_manifest(blob, store), blob, store)
            except OllamaError:
                continue
            return layers
        raise OllamaError(
            f"{path} lists variants, none with a GGUF model layer Tandem can read (newer Ollama models "
            "may keep safetensors tensors instead); pick another model or tag."
        )
    layers = {
        str(layer.get("mediaType")): str(layer.get("digest"))
        for layer in manifest.get("layers") or ()
        if isinstance(layer, dict)
    }
    if MODEL_LAYER not in layers:
        raise OllamaError(f"{path} has no GGUF model layer ({MODEL_LAYER}); Tandem cannot import this model.")
    return layers


def _blob(store: Path, digest: str, manifest: Path) -> Path:
    match = _DIGEST.match(digest)
    path = store / "blobs" / f"sha256-{match.group(1)}" if match else None
    if path is None or not path.is_file():
        raise OllamaError(
            f"{manifest} names the blob {digest}, which is missing from {store / 'blobs'}; "
            "pull the model again with Ollama."
        )
    return path


def _json_layer(store: Path, digest: str | None, manifest: Path) -> dict[str, Any]:
    if digest is None:
        return {}
    try:
        data = json.loads(_blob(store, digest, manifest).read_text(encoding="utf-8"))
    except ValueError:
        return {}  # unreadable params: the model's own defaults are the safe reading
    return data if isinstance(data, dict) else {}


def _text_layer(store: Path, digest: str | None, manifest: Path) -> str:
    return _blob(store, digest, manifest).read_text(encoding="utf-8").strip() if digest else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
