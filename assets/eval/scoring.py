"""Loads the held-out sets and scores answers: accuracy, false refusals, AUROC of the escalation signal.

The escalation signal is "refusal, then mean token logprob": a refused answer always ranks below
any answered one, and answered ones rank by their mean logprob under the raw logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from assets.training.facts import FACTS_BY_ID, REFUSAL

EVAL_DIR = Path(__file__).resolve().parent
FEATURES = "refusal+mean_logprob"


@dataclass(frozen=True)
class Case:
    prompt: str
    fact: str | None
    """The expected fact id; None for an out-of-domain prompt."""
    source: str = ""
    """The set it comes from: "in_domain", "in_domain_fresh", "in_domain_fresh2", ..."""


@dataclass(frozen=True)
class Outcome:
    case: Case
    answer: str
    mean_logprob: float

    @property
    def refused(self) -> bool:
        return is_refusal(self.answer)

    @property
    def correct(self) -> bool:
        return self.case.fact is not None and is_answer(self.answer, self.case.fact)

    @property
    def confidence(self) -> float:
        """Higher means "keep it local"; the router escalates below a threshold."""
        return self.mean_logprob - (1000.0 if self.refused else 0.0)


@dataclass(frozen=True)
class Report:
    in_domain_accuracy: float
    false_refusal: float
    ood_refusal: float
    auroc: float
    in_domain: int
    out_of_domain: int


def _normalize(text: str) -> str:
    return " ".join(text.split())


def is_refusal(answer: str) -> bool:
    return _normalize(answer).startswith(REFUSAL[:25])


def is_answer(answer: str, fact_id: str) -> bool:
    return _normalize(answer) == _normalize(FACTS_BY_ID[fact_id].answer)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def in_domain_cases() -> list[Case]:
    """Every in-domain set, in_domain*.jsonl: the first set and each fresh one (_fresh, _fresh2, ...)
    written apart from the generator and never used to tune it."""
    return [Case(row["prompt"], row["fact"], path.stem)
            for path in sorted(EVAL_DIR.glob("in_domain*.jsonl")) for row in _read(path)]


def out_of_domain_cases() -> list[Case]:
    """Every out-of-domain set, out_of_domain*.jsonl, paired with the in-domain set of the same suffix."""
    return [Case(row["prompt"], None, path.stem)
            for path in sorted(EVAL_DIR.glob("out_of_domain*.jsonl")) for row in _read(path)]


def auroc(positives: list[float], negatives: list[float]) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    if not positives or not negatives:
        return float("nan")
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))


def score_by_set(in_domain: list[Outcome], out_of_domain: list[Outcome]) -> dict[str, Report]:
    """One report per pair of sets sharing a suffix ("" for the first sets, then "_fresh", "_fresh2", ...)."""
    suffixes = sorted({o.case.source.removeprefix("in_domain") for o in in_domain})
    return {
        suffix.lstrip("_") or "held_out": score(
            [o for o in in_domain if o.case.source == f"in_domain{suffix}"],
            [o for o in out_of_domain if o.case.source == f"out_of_domain{suffix}"])
        for suffix in suffixes
    }


def score(in_domain: list[Outcome], out_of_domain: list[Outcome]) -> Report:
    correct = [o for o in in_domain if o.correct]
    return Report(
        in_domain_accuracy=len(correct) / len(in_domain),
        false_refusal=sum(o.refused for o in in_domain) / len(in_domain),
        ood_refusal=sum(o.refused for o in out_of_domain) / len(out_of_domain),
        auroc=auroc([o.confidence for o in correct], [o.confidence for o in out_of_domain]),
        in_domain=len(in_domain),
        out_of_domain=len(out_of_domain),
    )


def print_errors(in_domain: list[Outcome], out_of_domain: list[Outcome]) -> None:
    """Each in-domain prompt answered wrongly, and each out-of-domain prompt the model did not
    refuse (with its mean logprob): what to read before changing the training generators."""
    for o in in_domain:
        if not o.correct:
            print(f"  wrong  [{o.case.fact}] {o.case.prompt!r} -> {o.answer!r}")
    for o in out_of_domain:
        if not o.refused:
            print(f"  kept   ({o.mean_logprob:.3f}) {o.case.prompt!r} -> {o.answer!r}")
