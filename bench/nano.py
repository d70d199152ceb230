"""tandem-nano through the engine: held-out accuracy, false refusals, AUROC of the escalation
signal, and size.

    python bench/nano.py [--json] [--model-dir DIR] [--limit N]

With --json the last line is {"in_domain_accuracy", "auroc", "false_refusal", "size_mb", "features"}.
Bars: accuracy >= 0.90, AUROC >= 0.95, false refusals <= 0.10, size <= 20 MB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from assets import embedded_model_dir  # noqa: E402
from assets.eval.scoring import (  # noqa: E402
    FEATURES, Case, Outcome, in_domain_cases, out_of_domain_cases, print_errors, score, score_by_set,
)

MAX_ANSWER_TOKENS = 96


def model_size_mb(model_dir: Path) -> float:
    return sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file()) / 1e6


def ask(engine, prompt: str) -> tuple[str, float]:
    """Greedy answer and its mean token logprob (raw logits), as the router would see them."""
    from engine.api import FinishEvent, GenerationRequest

    request = GenerationRequest(messages=[{"role": "user", "content": prompt}],
                                max_tokens=MAX_ANSWER_TOKENS, temperature=0.0, top_p=1.0, seed=0)
    text, logprobs = [], []
    for event in engine.generate(request):
        if isinstance(event, FinishEvent):
            break
        text.append(event.text)
        logprobs.append(event.logprob)
    return "".join(text), (sum(logprobs) / len(logprobs) if logprobs else float("-inf"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--model-dir", type=Path, default=embedded_model_dir())
    parser.add_argument("--limit", type=int, default=0, help="only the first N prompts of each set")
    parser.add_argument("--show-errors", action="store_true")
    args = parser.parse_args()
    if not (args.model_dir / "mlc-chat-config.json").is_file():
        print(f"No model at {args.model_dir}; regenerate it (see assets/models/tandem-nano/README.md).")
        return 2
    try:
        from engine.loader import open_engine
    except ImportError as error:
        print(f"The engine's loader is not available ({error}); this benchmark needs engine.loader.open_engine.")
        return 2

    started = time.perf_counter()
    engine = open_engine(args.model_dir, backend="tvm")
    load_s = time.perf_counter() - started
    in_cases, out_cases = in_domain_cases(), out_of_domain_cases()
    if args.limit:
        in_cases, out_cases = in_cases[: args.limit], out_cases[: args.limit]

    def run(cases: list[Case]) -> list[Outcome]:
        return [Outcome(case, *ask(engine, case.prompt)) for case in cases]

    started = time.perf_counter()
    try:
        in_domain, out_of_domain = run(in_cases), run(out_cases)
    finally:
        engine.close()
    run_s = time.perf_counter() - started
    report = score(in_domain, out_of_domain)
    size_mb = model_size_mb(args.model_dir)

    if args.show_errors:
        print_errors(in_domain, out_of_domain)
    print(f"tandem-nano via {engine.info.backend} ({engine.info.quantization}), "
          f"loaded in {load_s:.1f} s, {report.in_domain + report.out_of_domain} prompts in {run_s:.1f} s")
    print(f"  held-out in-domain accuracy  {report.in_domain_accuracy:.3f}  (bar >= 0.90, n={report.in_domain})")
    print(f"  false refusals               {report.false_refusal:.3f}  (bar <= 0.10)")
    print(f"  out-of-domain refused        {report.ood_refusal:.3f}  (n={report.out_of_domain})")
    print(f"  AUROC [{FEATURES}]  {report.auroc:.3f}  (bar >= 0.95)")
    print(f"  size                         {size_mb:.1f} MB  (bar <= 20 MB)")
    for name, part in score_by_set(in_domain, out_of_domain).items():
        print(f"  set {name:9} accuracy {part.in_domain_accuracy:.3f}  false refusals {part.false_refusal:.3f}  "
              f"ood refused {part.ood_refusal:.3f}  AUROC {part.auroc:.3f}  (n={part.in_domain}+{part.out_of_domain})")
    if args.json:
        print(json.dumps({
            "in_domain_accuracy": round(report.in_domain_accuracy, 4),
            "auroc": round(report.auroc, 4),
            "false_refusal": round(report.false_refusal, 4),
            "size_mb": round(size_mb, 2),
            "features": FEATURES,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
