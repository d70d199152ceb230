"""The general calibration and evaluation set: short-answer prompts graded by normalised match,
split by topic into a calibrate half and a held-out half, and an ungraded open-ended list."""

from __future__ import annotations

import json
from pathlib import Path

from assets.eval.general.records import Item

GENERAL_DIR = Path(__file__).resolve().parent
SPLITS = ("calibrate", "heldout")


def load(split: str) -> list[Item]:
    """The graded items of one half, in file order."""
    if split not in SPLITS:
        raise ValueError(f"no split {split!r} in the general eval set; use one of {', '.join(SPLITS)}")
    path = GENERAL_DIR / f"{split}.jsonl"
    return [Item.from_json(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def open_ended() -> list[str]:
    """Requests with no single right answer (poems, summaries): never graded."""
    path = GENERAL_DIR / "open_ended.jsonl"
    return [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def stratified_slice(items: list[Item], n: int) -> list[Item]:
    """About n items spread over every kind (round robin), for short runs such as CI."""
    by_kind: dict[str, list[Item]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item)
    chosen: list[Item] = []
    depth = 0
    while len(chosen) < min(n, len(items)):
        for group in by_kind.values():
            if depth < len(group) and len(chosen) < n:
                chosen.append(group[depth])
        depth += 1
    return chosen
