"""Readable model names from what a model came from: a Hub repository, a GGUF file name, an
Ollama model and tag."""

from __future__ import annotations

import re

_INVALID = re.compile(r"[^a-z0-9._-]+")


def slug(text: str) -> str:
    """Lower-case, with anything but letters, digits, '.', '-' and '_' turned into '-'. A '.'
    before a letter (as in "Instruct.Q4_1") becomes '-' too; one between digits ("3.2") stays."""
    lowered = re.sub(r"\.(?=[a-zA-Z])", "-", text).lower()
    return re.sub(r"-{2,}", "-", _INVALID.sub("-", lowered)).strip("-._") or "model"


def name_for_repo(repo: str, quantization: str | None = None) -> str:
    """"mlc-ai/Qwen2-0.5B-Instruct-q4f16_1-MLC" -> "qwen2-0.5b-instruct-q4f16_1"; a checkpoint
    converted to `quantization` gets it appended unless the name already says it."""
    base = slug(repo.rsplit("/", 1)[-1])
    if base.endswith("-mlc"):
        base = base[: -len("-mlc")]
    if quantization and not base.endswith(quantization):
        base = f"{base}-{quantization}"
    return base


def name_for_gguf(filename: str) -> str:
    """"SmolLM2-135M-Instruct.Q4_1.gguf" -> "smollm2-135m-instruct-q4_1"."""
    stem = filename.rsplit("/", 1)[-1]
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    return slug(stem)


def name_for_ollama(model: str, tag: str) -> str:
    """"llama3.2", "1b" -> "llama3.2-1b"; the tag "latest" is left out."""
    base = slug(model.replace("/", "-"))
    return base if tag == "latest" else f"{base}-{slug(tag)}"
