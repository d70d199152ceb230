"""What a model declares about itself in the `tandem` section of mlc-chat-config.json (its refusal
sentence, its skills, and which weights an imported GGUF holds), read once into typed values for
EngineInfo."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import ModelFileError


@dataclass(frozen=True)
class DeclaredFacts:
    refusal: str | None = None
    skills: tuple[str, ...] | None = None
    """None when the model declares no skill list (then its confidence alone decides)."""
    weights: str | None = None
    """Which file an imported GGUF is (gguf_weights_id); None for other models."""


def declared_facts(tandem: Mapping[str, Any], source: str) -> DeclaredFacts:
    """The refusal and skills in `tandem` (source names the file, for errors). A skill is a name,
    or an object with a "name"; anything else is a ModelFileError naming the key and the fix."""
    refusal = tandem.get("refusal")
    if refusal is not None and not isinstance(refusal, str):
        raise ModelFileError(f"{source}: tandem.refusal must be a sentence (a string), not {refusal!r}; fix or remove it.")
    weights = gguf_weights_id(tandem.get("gguf"))
    if "skills" not in tandem:
        return DeclaredFacts(refusal, None, weights)
    raw = tandem["skills"]
    if not isinstance(raw, list):
        raise ModelFileError(f"{source}: tandem.skills must be a list of skill names, not {raw!r}; fix or remove it.")
    return DeclaredFacts(refusal, tuple(_skill_name(entry, source) for entry in raw), weights)


def gguf_weights_id(gguf: Any) -> str | None:
    """Which file an imported GGUF is, e.g. "q4_1-3f2a9c01b2de": its main tensor type and the
    start of its sha256 (recorded at import), else its weights' size (imports before the digest).
    What a model's calibration is keyed on, so a requantized or replaced file is not taken for it."""
    if not isinstance(gguf, Mapping):
        return None
    types = gguf.get("tensor_types")
    main = str(next(iter(types))).lower() if isinstance(types, Mapping) and types else "gguf"
    digest = gguf.get("sha256")
    if isinstance(digest, str) and digest:
        return f"{main}-{digest[:12]}"
    size = gguf.get("weight_bytes")
    return f"{main}-{size}b" if isinstance(size, int) else main


def _skill_name(entry: object, source: str) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
        return entry["name"]
    raise ModelFileError(
        f"{source}: tandem.skills holds {entry!r}; each skill is a name (or an object with a \"name\"). Fix or remove it."
    )
