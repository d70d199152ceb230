"""EngineInfo.extra from the `tandem` section of mlc-chat-config.json (refusal sentence, skills)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def info_extras(tandem: Mapping[str, Any]) -> dict[str, str]:
    """{"refusal": the sentence, "skills": the skills list as JSON}, each only when present."""
    extras = {}
    if isinstance(tandem.get("refusal"), str):
        extras["refusal"] = tandem["refusal"]
    if "skills" in tandem:
        extras["skills"] = json.dumps(tandem["skills"])
    return extras
