"""EngineInfo.extra from the `tandem` section of mlc-chat-config.json (refusal sentence, skills,
and which weights an imported GGUF holds)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def info_extras(tandem: Mapping[str, Any]) -> dict[str, str]:
    """{"refusal": the sentence, "skills": the skills list as JSON, "weights": an imported GGUF's
    weights}, each only when present."""
    extras = {}
    if isinstance(tandem.get("refusal"), str):
        extras["refusal"] = tandem["refusal"]
    if "skills" in tandem:
        extras["skills"] = json.dumps(tandem["skills"])
    weights = gguf_weights_id(tandem.get("gguf"))
    if weights:
        extras["weights"] = weights
    return extras


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
