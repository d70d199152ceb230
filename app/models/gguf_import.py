"""Importing a GGUF file as a Tandem model: checks the file, calls the engine's importer into a
staging folder, records where it came from, and renames it into the models folder."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.models.catalog import MODEL_CONFIG, ModelSource
from app.models.install import InstallError, commit, destination, staged

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class Installed:
    name: str
    path: Path
    route: str
    """One line for people: how the weights got in and what it cost."""
    source: ModelSource


class ImporterMissing(InstallError):
    """This build has no GGUF importer (engine.gguf.importer)."""


def importer() -> Callable[..., Any]:
    try:
        from engine.gguf.importer import import_gguf
    except ImportError:
        raise ImporterMissing(
            "This build of Tandem cannot read GGUF files yet (engine.gguf.importer is missing); "
            "update Tandem, or pull an MLC or safetensors repository instead."
        ) from None
    return import_gguf


def importer_available() -> bool:
    try:
        importer()
    except ImporterMissing:
        return False
    return True


def check_gguf_file(path: Path) -> Path:
    """The file, resolved; InstallError when it is missing or not a GGUF."""
    if not path.is_file():
        raise InstallError(f"{path} does not exist or is not a file; give the path of a .gguf file.")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise InstallError(
            f"{path} is not a GGUF file (it does not start with 'GGUF'); "
            "download the model again, or give the path of a .gguf file."
        )
    return path.resolve()


def import_gguf_as(
    gguf_path: Path,
    name: str,
    source: ModelSource,
    *,
    generation_defaults: Mapping[str, float] | None = None,
    system_prompt: str | None = None,
    context_window: int | None = None,
    overwrite: bool = False,
    on_progress: Callable[[str, float], None] | None = None,
    sha256: str | None = None,
) -> Installed:
    """Import `gguf_path` (referenced, never copied) as the model `name`. On any failure nothing
    is left in the models folder. `sha256`: the file's digest, where it is already known."""
    gguf = check_gguf_file(gguf_path)
    final = destination(name, overwrite)
    import_gguf = importer()
    with staged(name) as staging:
        result = import_gguf(
            gguf,
            staging,
            reference=True,
            generation_defaults=dict(generation_defaults) if generation_defaults else None,
            system_prompt=system_prompt,
            on_progress=on_progress,
            sha256=sha256,
        )
        if context_window:
            _limit_context(staging, context_window)
        route = route_of(result, staging)
        source = ModelSource(source.kind, source.origin, route, source.owned_files)
        path = commit(staging, final, source)
    return Installed(name, path, route, source)


def route_of(result: Any, model_dir: Path) -> str:
    """The importer's one line about the route the weights took (ImportResult.route, else the
    config's tandem.gguf.route)."""
    route = getattr(result, "route", None)
    if isinstance(route, str) and route:
        return route
    try:
        config = json.loads((model_dir / MODEL_CONFIG).read_text(encoding="utf-8"))
        return str(config["tandem"]["gguf"]["route"])
    except (OSError, ValueError, KeyError, TypeError):
        return "imported"


def _limit_context(model_dir: Path, context_window: int) -> None:
    """Ollama's num_ctx: the author's chosen window, never more than the model's own."""
    path = model_dir / MODEL_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    own = int(config.get("context_window_size") or context_window)
    config["context_window_size"] = min(own, int(context_window))
    config["prefill_chunk_size"] = min(int(config.get("prefill_chunk_size") or own), config["context_window_size"])
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def import_source(
    source: str,
    *,
    name: str | None = None,
    overwrite: bool = False,
    on_progress: Callable[[str, float], None] | None = None,
) -> Installed:
    """`tandem models import SOURCE`: a GGUF path, or `ollama:NAME[:TAG]` from Ollama's store
    (with its params as generation defaults and its system prompt)."""
    from app.models import ollama
    from app.models.naming import name_for_gguf, name_for_ollama

    if source.startswith("ollama:"):
        found = ollama.find_model(source)
        return import_gguf_as(
            found.gguf,
            name or name_for_ollama(found.model, found.tag),
            ModelSource("ollama", f"ollama:{found.reference}"),
            generation_defaults=found.generation_defaults or None,
            system_prompt=found.system_prompt,
            context_window=found.context_window,
            overwrite=overwrite,
            on_progress=on_progress,
            sha256=found.sha256,
        )
    path = check_gguf_file(Path(source).expanduser())
    return import_gguf_as(
        path,
        name or name_for_gguf(path.name),
        ModelSource("gguf", str(path)),
        overwrite=overwrite,
        on_progress=on_progress,
    )
