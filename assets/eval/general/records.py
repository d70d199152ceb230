"""The record of one graded prompt in the general eval set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    """facts, arithmetic, units, dates, translation, plurals, tenses, antonyms, code, reasoning, tandem."""
    topic: str
    """The subject; every item about it is in the same half."""
    prompt: str
    accept: tuple[str, ...]
    choices: tuple[str, ...] = ()
    """When set, the options named in the prompt: the first one the answer names must be accepted."""
    split: str = ""
    """"calibrate" or "heldout"."""

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "kind": self.kind, "topic": self.topic, "prompt": self.prompt,
                               "accept": list(self.accept)}
        if self.choices:
            row["choices"] = list(self.choices)
        row["split"] = self.split
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Item:
        return cls(id=str(row["id"]), kind=str(row["kind"]), topic=str(row["topic"]), prompt=str(row["prompt"]),
                   accept=tuple(str(a) for a in row["accept"]), choices=tuple(str(c) for c in row.get("choices", ())),
                   split=str(row.get("split", "")))
