"""`tandem models calibrate NAME`: fit the router's confidence for one local model on the general
eval set (and, with --from-history, the user's feedback labels), measure it on the held-out half,
and store it where the router finds it for that model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assets.eval.general.records import Item

EXIT_FAILED = 1
EXIT_NO_MODEL = 3


def register(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "calibrate",
        help="fit the router's confidence for a local model (minutes on a CPU)",
        description=__doc__,
    )
    parser.add_argument("name", metavar="NAME", help="a model as `tandem models` lists it, or its folder")
    parser.add_argument("--from-history", action="store_true",
                        help="add the feedback labels kept while 'learn from use' was on")
    parser.add_argument("--limit", type=int, metavar="N", default=0,
                        help="use about N prompts of each half, spread over every kind (quicker, coarser)")
    parser.add_argument("--max-tokens", type=int, metavar="N", default=None,
                        help="tokens per answer (default 32: short answers are decided early)")
    parser.add_argument("--samples", type=int, metavar="N", default=0,
                        help="draw N extra answers per prompt and weigh how far they agree with the answer "
                             "(slower: N+1 answers per prompt; the router then draws N where they could flip "
                             "its decision)")
    parser.set_defaults(handler=calibrate_model)


def _find_model(name: str) -> Any:
    from app.local_models import LocalModel, discover_models

    wanted = name.casefold()
    for model in discover_models():
        if model.label.casefold() == wanted or model.path.name.casefold() == wanted:
            return model
    path = Path(name).expanduser()
    if path.exists():  # a model folder, or a single-file model such as a GGUF where the engine reads one
        return LocalModel(path.name, path, "auto", str(path))
    return None


def _progress(stage: str) -> Any:
    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        line = f"{stage} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\x1b[K{line}")
            if done == total:
                sys.stderr.write("\n")
        elif done == total or done % 25 == 0:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return show


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"tandem: error: {message}", file=sys.stderr)
    return code


def calibrate_model(args: argparse.Namespace) -> int:
    from app.local_models import ModelUnavailable, models_dir, open_model_or_explain

    model = _find_model(args.name)
    if model is None:
        return _fail(f"no local model is called {args.name!r}; `tandem models` lists them (models live in "
                     f"{models_dir()}), or pass a model folder.", EXIT_NO_MODEL)
    try:
        engine = open_model_or_explain(model)
    except ModelUnavailable as problem:
        return _fail(str(problem), EXIT_NO_MODEL)
    try:
        return _calibrate(engine, model, args)
    except KeyboardInterrupt:
        print("\ntandem: calibration cancelled; nothing was saved.", file=sys.stderr)
        return 130
    finally:
        engine.close()


def _calibrate(engine: Any, model: Any, args: argparse.Namespace) -> int:
    from app.paths import data_dir
    from app.store.records import now, to_text
    from assets.eval import general
    from offload import calibrate as fitting
    from offload.calibrations import ModelIdentity, data_dir_path, save

    identity = ModelIdentity.of(engine.info)
    extra: list[tuple[dict[str, float], bool]] = []
    if args.from_history:
        labels = _history_labels(args, identity.key)
        if labels is None:
            return EXIT_FAILED
        extra = [(label.features, label.good) for label in labels]
        print(f"{len(extra)} feedback labels for {identity} from your history.")
        if not extra:
            print("  (none yet: turn on 'learn from use' in settings and mark replies with F7 / F8)")

    def prompts(split: str) -> list[fitting.Prompt]:
        items = general.load(split)
        if args.limit:
            items = general.stratified_slice(items, args.limit)
        return [fitting.Prompt(i.prompt, _grader(i), i.kind) for i in items]

    max_tokens = args.max_tokens or fitting.MAX_TOKENS
    sampling = _sampling_override(args, identity.model_id)  # the router samples with these
    fit_runs = fitting.run_prompts(engine, prompts("calibrate"), max_tokens=max_tokens,
                                   progress=_progress("calibrate"), sampling=sampling)
    heldout_runs = fitting.run_prompts(engine, prompts("heldout"), max_tokens=max_tokens,
                                       progress=_progress("held-out "), sampling=sampling)
    if args.samples > 0:
        fitting.add_samples(engine, fit_runs, args.samples, progress=_progress("samples calibrate"),
                            sampling=sampling)
        fitting.add_samples(engine, heldout_runs, args.samples, progress=_progress("samples held-out "),
                            sampling=sampling)
    refusal = engine.info.refusal
    try:
        stored, report = fitting.calibrate(identity, fit_runs, heldout_runs, extra, refusal, to_text(now()))
    except fitting.CalibrationFailed as problem:
        return _fail(f"cannot calibrate {identity}: {problem} Nothing was saved.")
    path = save(stored, data_dir_path(data_dir(), identity))
    _remember_fit(args, stored)
    right = sum(r.correct for r in fit_runs)
    print(f"Calibrated {identity} on {stored.n_fit} examples ({right}/{len(fit_runs)} calibrate prompts "
          f"answered right{f', {len(extra)} feedback labels' if extra else ''}).")
    if report is not None:
        print(f"Held-out half ({report.n} prompts): accuracy {report.accuracy:.1%}, AUROC {report.auroc:.3f}; "
              f"at the threshold {stored.cutoff:.2f} it keeps {report.kept_local_correct:.0%} of right answers "
              f"local and escalates {report.escalated_wrong:.0%} of wrong ones; early abort saves "
              f"{report.early_abort_saved:.0%} of local decode on escalated turns.")
    print(f"Saved {path}; the next turn on {model.label} uses it.")
    return 0


def _grader(item: Item) -> Callable[[str], bool]:
    """Whether an answer to `item` is right, by the evaluation set's own scoring."""
    from assets.eval.general.scoring import is_correct

    return lambda answer: is_correct(answer, item.accept, item.choices)


def _open_store(args: argparse.Namespace) -> Any:
    from app.store import Store

    db = getattr(args, "db", None)
    return Store.open(Path(db) if db else None)


def _sampling_override(args: argparse.Namespace, model_id: str) -> dict[str, Any]:
    """The user's sampling override for this model (the router's request fields), else none: the
    model's own generation settings apply, as they do in the router."""
    from app.settings import load_settings
    from app.store import StoreError

    try:
        with _open_store(args) as store:
            return dict(load_settings(store).sampling_for(model_id).request_fields())
    except StoreError:
        return {}


def _history_labels(args: argparse.Namespace, key: str) -> list[Any] | None:
    from app.store import StoreError

    try:
        with _open_store(args) as store:
            return store.feedback_labels(key)
    except StoreError as problem:
        _fail(f"cannot read the feedback labels: {problem}")
        return None


def _remember_fit(args: argparse.Namespace, stored: Any) -> None:
    """What the settings screen shows as the last fit (best effort: the fit itself is saved)."""
    from app.feedback import LAST_FIT_SETTING
    from app.store import StoreError

    try:
        with _open_store(args) as store:
            store.set_setting(LAST_FIT_SETTING, {
                "model": str(stored.identity), "heldout_auroc": stored.heldout_auroc, "n_fit": stored.n_fit,
                "history_labels": stored.history_labels, "created": stored.created})
    except StoreError:
        pass
