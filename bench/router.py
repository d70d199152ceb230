"""How well the router's confidence score decides keep-local vs escalate, on the embedded model.

Runs labelled prompts (answerable in-domain vs unanswerable) through the real engine and reports
the AUROC of the calibrated score (cross-validated), baselines, the deferral curve (numbers and a
PNG), the shares kept and escalated at the shipped threshold, and the decode time early abort saves.
`--fit` writes offload/confidence_weights.json from all prompts. `--json`: one JSON object last.

`--model NAME` (a model folder, or a GGUF file imported on the fly) instead runs the general eval
set through that model: fits its calibration on the calibrate half, as `tandem models calibrate`
does, and measures it on the held-out half against baselines; `--limit N` takes about N prompts
of each half, spread over every kind; `--save` stores the fit where the router finds it.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.api import FinishEvent, GenerationRequest, TokenEvent  # noqa: E402
from offload.confidence import (  # noqa: E402
    WEIGHTS_PATH,
    Calibration,
    EscalationThreshold,
    StreamMonitor,
    answer_confidence,
    features,
    fit_calibration,
    is_refusal,
)

OUR_EVAL_DIR = REPO / "assets" / "eval" / "router"


@dataclass(frozen=True)
class Prompt:
    text: str
    answerable: bool
    expect: tuple[str, ...] = ()
    """Any of these in the answer makes it correct (our own prompt files)."""
    fact: str | None = None
    """The expected fact id (the nano helper's held-out set, judged by its scoring module)."""


@dataclass
class Run:
    prompt: Prompt
    answer: str
    features: dict[str, float]
    refused: bool
    correct: bool
    decode_s: float
    abort_at_s: float | None
    """Decode seconds until the streaming monitor would have stopped, None if it would not."""


def load_prompts(path: Path | None) -> tuple[list[Prompt], str]:
    """The given file; else the embedded model's held-out set (assets/eval, written apart from
    its training generators) together with ours (assets/eval/router)."""
    if path:
        return _read_ours(path), str(path)
    prompts, sources = [], []
    try:
        from assets.eval import scoring
    except ImportError:
        scoring = None
    if scoring is not None:
        prompts += [Prompt(c.prompt, True, fact=c.fact) for c in scoring.in_domain_cases()]
        prompts += [Prompt(c.prompt, False) for c in scoring.out_of_domain_cases()]
        sources.append("assets/eval (held-out)")
    for file in sorted(OUR_EVAL_DIR.glob("*.jsonl")):
        prompts += _read_ours(file)
        sources.append(str(file.relative_to(REPO)))
    return prompts, ", ".join(sources)


def _read_ours(file: Path) -> list[Prompt]:
    rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Prompt(r["prompt"], bool(r["answerable"]), tuple(r.get("expect", ()))) for r in rows]


def is_correct(prompt: Prompt, answer: str, refused: bool) -> bool:
    if not prompt.answerable or refused:
        return False
    if prompt.fact is not None:
        from assets.eval import scoring

        return scoring.is_answer(answer, prompt.fact)
    said = answer.casefold()
    return not prompt.expect or any(e.casefold() in said for e in prompt.expect)


def run_prompt(engine, prompt: Prompt, refusal: str | None, max_tokens: int) -> Run:
    request = GenerationRequest(messages=[{"role": "user", "content": prompt.text}],
                                max_tokens=max_tokens, temperature=0.0, seed=0)
    monitor = StreamMonitor(refusal)
    tokens: list[TokenEvent] = []
    abort_at: float | None = None
    prompt_tokens = 0
    first = time.perf_counter()
    for event in engine.generate(request):
        now = time.perf_counter()
        if isinstance(event, FinishEvent):
            prompt_tokens = event.usage.prompt_tokens
            continue
        if not tokens:
            first = now  # decode time is counted from the first token; prefill is paid either way
        tokens.append(event)
        if abort_at is None and monitor.observe(event):
            abort_at = now - first
    decode_s = max(time.perf_counter() - first, 1e-9) if tokens else 0.0
    answer = "".join(t.text for t in tokens)
    values = features(tokens, prompt_tokens)
    refused = is_refusal(answer, refusal)
    return Run(prompt, answer, values, refused, is_correct(prompt, answer, refused), decode_s, abort_at)


def auroc(scores: list[float], positive: list[bool]) -> float:
    """Probability a random positive outranks a random negative (ties count half)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def fit(runs: list[Run], fitted_on: str = "") -> Calibration | None:
    """Refusals are gated before the score, so the regression learns from the other answers
    only (a refusal is confident, and would teach it that confidence means wrong)."""
    kept = [r for r in runs if not r.refused]
    labels = [r.correct for r in kept]
    if len(set(labels)) < 2:
        return None
    return fit_calibration([r.features for r in kept], labels, fitted_on=fitted_on)


def cross_validated_scores(runs: list[Run], folds: int = 5, seed: int = 0) -> list[float]:
    """Each prompt scored by a calibration fitted without it; refusals score 0."""
    order = list(range(len(runs)))
    random.Random(seed).shuffle(order)
    scores = [0.0] * len(runs)
    for fold in range(folds):
        held = set(order[fold::folds])
        calibration = fit([runs[i] for i in order if i not in held])
        for i in held:
            run = runs[i]
            if calibration is None:
                scores[i] = 0.0 if run.refused else float(run.correct)
            else:
                scores[i] = answer_confidence(run.features, run.refused, calibration)
    return scores


def deferral_curve(scores: list[float], runs: list[Run], points: int = 11) -> list[tuple[float, float]]:
    """Quality (share answered well) against share escalated, escalating the least confident
    first; an escalated turn counts as answered well (the cloud is the reference)."""
    order = np.argsort(scores, kind="stable")
    local_quality = np.array([float(r.correct) for r in runs])[order]
    n = len(runs)
    curve = []
    for share in np.linspace(0, 1, points):
        escalated = int(round(share * n))
        curve.append((float(share), float((escalated + local_quality[escalated:].sum()) / n)))
    return curve


def _figure(value: float) -> float | None:
    """Rounded for the report; None (JSON null) where undefined, e.g. no correct answer at all."""
    return None if value != value else round(value, 4)


DEFERRAL_LABELS = {
    "router": "router (calibrated score)",
    "mean_logprob": "mean token logprob",
    "random": "random order",
}


def write_plot(path: Path, curves: dict[str, list[tuple[float, float]]], title: str) -> None:
    """The deferral curves as a PNG (matplotlib, no display needed): quality against the share
    of turns escalated, one line per score."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(5.5, 4.2), dpi=120)
    for name, points in curves.items():
        shares, quality = zip(*points)
        axes.plot(shares, quality, marker="." if len(points) > 2 else None, label=DEFERRAL_LABELS.get(name, name))
    axes.set_xlabel("share of turns escalated to the cloud (least confident first)")
    axes.set_ylabel("share answered well")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--model", type=Path, help="a model folder or GGUF file: the general set through it")
    parser.add_argument("--prompts", type=Path, help="only this JSONL file of {prompt, answerable, expect}")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--fit", action="store_true", help=f"write fitted weights to {WEIGHTS_PATH.name}")
    parser.add_argument("--png", type=Path, default=REPO / ".cache" / "bench" / "router-deferral.png")
    parser.add_argument("--limit", type=int, default=0, help="with --model: about N prompts of each half")
    parser.add_argument("--fit-limit", type=int, default=None,
                        help="with --model: about N prompts of the calibrate half (default --limit; 0: all)")
    parser.add_argument("--save", action="store_true", help="with --model: store the fit for the router")
    parser.add_argument("--reuse", action="store_true", help="with --model: reuse the last run's answers")
    parser.add_argument("--samples", type=int, default=0,
                        help="with --model: extra answers drawn per prompt for the sample-consistency signal")
    parser.add_argument("--sample-temperature", type=float, default=None,
                        help="with --samples: their temperature (default offload.consistency's; below 0: the model's own)")
    args = parser.parse_args(argv)
    if args.model is not None:
        return general_main(args)

    try:
        from engine.loader import open_engine
    except ImportError:
        print("The engine is not installed on this branch (engine.loader is missing): merge it first.")
        return 2
    from assets import embedded_model_dir

    model_dir = args.model or embedded_model_dir()
    if not (model_dir / "mlc-chat-config.json").exists():
        print(f"No model at {model_dir}: build the embedded model (branch nano) or pass --model DIR.")
        return 2
    prompts, source = load_prompts(args.prompts)
    if not any(p.answerable for p in prompts) or all(p.answerable for p in prompts):
        print("The prompt set needs both answerable and unanswerable prompts.")
        return 2

    engine = open_engine(model_dir)
    refusal = engine.info.refusal
    runs = [run_prompt(engine, p, refusal, args.max_tokens) for p in prompts]
    engine.close()

    good = [r.correct for r in runs]
    scores = cross_validated_scores(runs)
    # The headline separates answerable from unanswerable prompts (the bar); the stricter
    # figure also counts a wrong answer to an answerable prompt as one to escalate.
    answerable_label = [r.prompt.answerable for r in runs]
    rng = random.Random(0)
    baselines = {
        "random": auroc([rng.random() for _ in runs], answerable_label),
        "prompt_length": auroc([-len(r.prompt.text) for r in runs], answerable_label),
        "mean_logprob": auroc([r.features["mean_logprob"] for r in runs], answerable_label),
    }
    calibration = fit(runs, fitted_on=f"{len(runs)} prompts: {source}") or Calibration.load()
    if args.fit:
        WEIGHTS_PATH.write_text(calibration.to_json() + "\n", encoding="utf-8")
    cutoff = EscalationThreshold().cutoff(calibration)
    escalate = [r.abort_at_s is not None or s < cutoff for r, s in zip(runs, scores)]
    answerable = [i for i, r in enumerate(runs) if r.prompt.answerable]
    unanswerable = [i for i, r in enumerate(runs) if not r.prompt.answerable]
    kept_local = sum(not escalate[i] for i in answerable) / len(answerable)
    escalated = sum(escalate[i] for i in unanswerable) / len(unanswerable)
    escalated_runs = [r for r, e in zip(runs, escalate) if e and r.decode_s > 0]
    decode_total = sum(r.decode_s for r in escalated_runs)
    saved = sum(r.decode_s - r.abort_at_s for r in escalated_runs if r.abort_at_s is not None)
    early_abort_saved = saved / decode_total if decode_total else 0.0

    curve = deferral_curve(scores, runs)
    write_plot(
        args.png,
        {
            "router": curve,
            "mean_logprob": deferral_curve([r.features["mean_logprob"] for r in runs], runs),
            "random": [(0.0, curve[0][1]), (1.0, 1.0)],
        },
        f"Router deferral on {source}",
    )
    result = {
        "auroc": _figure(auroc(scores, answerable_label)),
        "auroc_correct": _figure(auroc(scores, good)),
        "baselines": {k: _figure(v) for k, v in baselines.items()},
        "kept_local": round(kept_local, 4),
        "escalated": round(escalated, 4),
        "early_abort_saved": round(early_abort_saved, 4),
    }
    print(f"prompts: {len(runs)} ({len(answerable)} answerable, {len(unanswerable)} not) from {source}")
    print(f"local answers correct: {sum(good)}/{len(answerable)} answerable; "
          f"refused: {sum(r.refused for r in runs if r.prompt.answerable)} answerable (false refusals), "
          f"{sum(r.refused for r in runs if not r.prompt.answerable)}/{len(unanswerable)} unanswerable")
    print(f"AUROC answerable vs not (5-fold cross-validated, refusal gate + logistic regression): "
          f"{result['auroc']}; correct answer vs all else: {result['auroc_correct']}")
    for name, value in result["baselines"].items():
        print(f"  baseline {name:<14} AUROC {value}")
    print(f"at the shipped threshold (risk {EscalationThreshold().risk}, cutoff {cutoff:.2f}): "
          f"kept local {kept_local:.1%} of answerable, escalated {escalated:.1%} of unanswerable")
    print(f"early abort saves {early_abort_saved:.1%} of local decode time on escalated turns")
    print("deferral curve (share escalated -> quality): "
          + ", ".join(f"{s:.0%}:{q:.3f}" for s, q in curve))
    print(f"deferral curve PNG: {args.png}")
    weights = dict(zip(calibration.names, (round(w, 3) for w in calibration.weights)))
    print(f"weights{' (written)' if args.fit else ''}: {weights}")
    if args.json:
        print(json.dumps(result))
    return 0


def _open_general_model(path: Path):
    """A model folder as it is; a GGUF file imported once into the bench cache."""
    from engine.loader import open_engine

    if path.is_file() and path.suffix == ".gguf":
        from engine.gguf.importer import import_gguf

        folder = REPO / ".cache" / "bench" / "models" / path.stem
        if not (folder / "mlc-chat-config.json").exists():
            import_gguf(path, folder)
        path = folder
    return open_engine(path)


def general_main(args: argparse.Namespace) -> int:
    """The held-out half of assets/eval/general through a named model: the issue's keys."""
    from assets.eval import general
    from assets.eval.general.scoring import is_correct
    from offload import calibrate as fitting
    from offload.calibrations import ModelIdentity, data_dir_path, model_agnostic_default, save

    engine = _open_general_model(args.model)
    identity = ModelIdentity.of(engine.info)

    limits = {"calibrate": args.limit if args.fit_limit is None else args.fit_limit, "heldout": args.limit}

    def prompts(split: str) -> list:
        items = general.load(split)
        items = general.stratified_slice(items, limits[split]) if limits[split] else items
        return [fitting.Prompt(i.prompt, lambda a, i=i: is_correct(a, i.accept, i.choices), i.kind) for i in items]

    def progress(stage: str):
        return lambda done, total: print(f"  {stage} {done}/{total}", file=sys.stderr, flush=True) \
            if done % 25 == 0 or done == total else None

    max_tokens = min(args.max_tokens, fitting.MAX_TOKENS)
    fit_runs, held = (_split_runs(engine, args, identity.key, split, limits[split], max_tokens, prompts(split),
                                  progress) for split in ("calibrate", "heldout"))
    without = None
    if args.samples:
        without = fitting.calibrate(identity, fit_runs, held, refusal=engine.info.refusal)[1]
        for split, runs in (("calibrate", fit_runs), ("heldout", held)):
            _add_samples(engine, args, f"{identity.key}-{split}-{limits[split]}", max_tokens, runs, progress)
    refusal = engine.info.refusal
    engine.close()
    stored, report = fitting.calibrate(identity, fit_runs, held, refusal=refusal)
    if args.save:
        from app.paths import data_dir

        print(f"saved {save(stored, data_dir_path(data_dir(), identity))}")
    good = [r.correct for r in held]
    rng = random.Random(0)
    default = model_agnostic_default()
    baselines = {
        "random": fitting.auroc([rng.random() for _ in held], good),
        "answer_length": fitting.auroc([-r.features["log_answer_tokens"] for r in held], good),
        "mean_logprob": fitting.auroc([r.features["mean_logprob"] for r in held], good),
        "uncalibrated": fitting.auroc([answer_confidence(r.features, r.refused, default) for r in held], good),
    }
    result = {
        "model": str(identity), "n_heldout": report.n, "accuracy": _figure(report.accuracy),
        "auroc": _figure(report.auroc), "baselines": {k: _figure(v) for k, v in baselines.items()},
        "kept_local_correct": _figure(report.kept_local_correct), "escalated_wrong": _figure(report.escalated_wrong),
        "early_abort_saved": _figure(report.early_abort_saved),
    }
    print(f"{identity}: calibrate {len(fit_runs)} prompts ({sum(r.correct for r in fit_runs)} right), "
          f"held-out {report.n} ({sum(good)} right); threshold {stored.cutoff:.3f}")
    by_kind: dict[str, list[bool]] = {}
    for run in held:
        by_kind.setdefault(run.kind, []).append(run.correct)
    print("held-out accuracy by kind: " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(by_kind.items())))
    weights = {n: round(w, 3) for n, w in zip(stored.calibration.names, stored.calibration.weights) if w}
    print(f"weights: {weights}; abort rule: "
          f"{'none' if stored.abort is None else f'cutoff {stored.abort.cutoff:.3f} at {stored.abort.checkpoints}'}")
    for name, value in result.items():
        if name != "model":
            print(f"  {name}: {value}")
    if args.samples:
        print(f"  sampled_share (answers the router would draw for): {_figure(report.sampled_share)}")
    if without is not None:
        print(f"  without samples: auroc {_figure(without.auroc)}, kept_local_correct "
              f"{_figure(without.kept_local_correct)}, escalated_wrong {_figure(without.escalated_wrong)}")
    if args.json:
        print(json.dumps(result))
    return 0


def _split_runs(engine, args: argparse.Namespace, key: str, split: str, limit: int, max_tokens: int,
                prompts: list, progress) -> list:
    """One half's runs, from the cache where --reuse finds the same model, half, slice and length
    (refits then skip decoding); each half is cached on its own, so a larger calibrate slice
    leaves the held-out runs as they were."""
    from offload import calibrate as fitting

    # Own sampling settings and hidden states (v2), middle states and the prompt's states on the
    # first token (v3): runs from before any of these are not reused.
    cache = REPO / ".cache" / "bench" / f"router-runs-v3-{key}-{split}-{limit}-{max_tokens}.pkl"
    if args.reuse and cache.exists():
        runs: list = pickle.loads(cache.read_bytes())
        for run, prompt in zip(runs, prompts):  # runs saved before these fields existed
            run.prompt = run.prompt or prompt.text
            run.truncated = run.truncated or len(run.tokens) >= max_tokens
        return runs
    runs = fitting.run_prompts(engine, prompts, max_tokens=max_tokens, progress=progress(split))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(runs))
    return runs


def _add_samples(engine, args: argparse.Namespace, key: str, max_tokens: int, runs: list, progress) -> None:
    """Draws --samples extra answers per prompt into one half's runs (kept beside the runs' cache,
    so a --reuse refits without drawing them again, and a larger --samples draws only the rest)."""
    from offload import calibrate as fitting
    from offload.consistency import SAMPLE_TEMPERATURE

    temperature = SAMPLE_TEMPERATURE if args.sample_temperature is None else args.sample_temperature
    temperature = None if temperature < 0 else temperature

    def cache(n: int) -> Path:
        return REPO / ".cache" / "bench" / f"router-samples-v2-{key}-{max_tokens}-{n}-{temperature}.pkl"

    if args.reuse:  # the most draws cached up to --samples (their first --samples); more are drawn on top
        found = next((n for n in range(max(args.samples, 64), 0, -1) if cache(n).exists()), None)
        if found is not None:
            for run, sample in zip(runs, pickle.loads(cache(found).read_bytes())):
                run.samples = tuple(sample[: args.samples])
            if found >= args.samples:
                return
    fitting.add_samples(engine, runs, args.samples, temperature=temperature, progress=progress("samples"))
    cache(args.samples).write_bytes(pickle.dumps([r.samples for r in runs]))


if __name__ == "__main__":
    raise SystemExit(main())
