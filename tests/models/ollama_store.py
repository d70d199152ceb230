"""Writing an Ollama model store the way Ollama lays it out (blobs/sha256-<hex>, manifests/ or
manifests-v2/ by host, namespace, model and tag), and a tiny GGUF written with the gguf package."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MODEL = "application/vnd.ollama.image.model"
PARAMS = "application/vnd.ollama.image.params"
SYSTEM = "application/vnd.ollama.image.system"
TEMPLATE = "application/vnd.ollama.image.template"
CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.ollama.manifest.list.v2+json"


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A small but well-formed llama GGUF: metadata and one F32 tensor."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.random.default_rng(seed).standard_normal((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def add_blob(store: Path, data: bytes | None = None, *, link_to: Path | None = None) -> dict:
    """Store bytes (or a link to a big file, as a test's stand-in for a multi-GB blob) as a blob;
    the layer entry that names it."""
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data if data is not None else link_to.read_bytes()).hexdigest()
    path = blobs / f"sha256-{digest}"
    if not path.exists():
        if link_to is not None:
            os.symlink(link_to, path)
        else:
            path.write_bytes(data)
    size = path.stat().st_size
    return {"digest": f"sha256:{digest}", "size": size}


def write_manifest(
    store: Path,
    model: str,
    tag: str,
    layers: list[dict],
    *,
    layout: str = "manifests",
    host: str = "registry.ollama.ai",
) -> Path:
    """The manifest JSON at <layout>/<host>/<namespace>/<model>/<tag>; manifests-v2 keeps it as a
    blob and links to it, as newer Ollama releases do."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, **add_blob(store, b"{}")},
        "layers": layers,
    }
    namespace, _, name = model.rpartition("/")
    path = store / layout / host / (namespace or "library") / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(manifest).encode()
    if layout == "manifests-v2":
        blob = store / "blobs" / add_blob(store, body)["digest"].replace(":", "-")
        os.symlink(blob, path)
    else:
        path.write_bytes(body)
    return path


def lay_out_model(
    store: Path,
    model: str,
    tag: str,
    gguf_path: Path,
    *,
    params: dict | None = None,
    system: str | None = None,
    layout: str = "manifests",
    host: str = "registry.ollama.ai",
    link: bool = False,
) -> Path:
    """A whole model: its GGUF layer, a Go template layer, and params and system when given."""
    model_blob = add_blob(store, link_to=gguf_path) if link else add_blob(store, gguf_path.read_bytes())
    layers = [{"mediaType": MODEL, **model_blob}, {"mediaType": TEMPLATE, **add_blob(store, b"{{ .Prompt }}")}]
    if params is not None:
        layers.append({"mediaType": PARAMS, **add_blob(store, json.dumps(params).encode())})
    if system is not None:
        layers.append({"mediaType": SYSTEM, **add_blob(store, system.encode())})
    return write_manifest(store, model, tag, layers, layout=layout, host=host)
