"""The local models Tandem can run, as the picker, `tandem ask` and `tandem serve` choose them: the
embedded tandem-nano and every model in the models folder (app.models.catalog), each offered on
MLC LLM's runtime too when the mlc_llm package is installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine loads when a model opens, not when the picker lists them
    from engine.api import Backend, Engine

from app.errors import AppError, unexpected
from app.models.catalog import EMBEDDED_NAME, MODEL_CONFIG, ModelRecord, human_size, installed_models
from app.models.catalog import models_dir as _models_dir
from engine.errors import EngineError


@dataclass(frozen=True)
class LocalModel:
    label: str
    path: Path
    backend: Backend
    """What engine.loader.open_engine takes: "auto", or "mlc" to insist on MLC LLM."""
    detail: str = ""


def models_dir() -> Path:
    """Where pulled, imported and converted models go."""
    return _models_dir()


def embedded_model() -> LocalModel:
    from assets import embedded_model_dir

    return LocalModel(EMBEDDED_NAME, embedded_model_dir(), "auto", "embedded · works offline, no key")


def discover_models() -> list[LocalModel]:
    """Every model the picker offers, the embedded one first (heavier than it looks: reads configs)."""
    found = [embedded_model()]
    found += [local_model_for(r) for r in installed_models() if not r.embedded]
    if importlib.util.find_spec("mlc_llm") is not None:
        found += [LocalModel(f"{m.label} on MLC LLM", m.path, "mlc", "mlc_llm runtime") for m in list(found)]
    return found


def local_model_for(record: ModelRecord) -> LocalModel:
    """An installed model as the picker and the engine loader take it."""
    return LocalModel(record.name, record.path, "auto", _detail(record))


def _detail(record: ModelRecord) -> str:
    if record.problem:
        return f"unusable: {record.problem}"
    context = f"context {record.context}" if record.context else "context ?"
    parts = [record.architecture, record.quantization, context, human_size(record.size_bytes), record.source.kind]
    return " · ".join(parts)


class UnknownModelName(AppError, LookupError):
    """`--model NAME` names no installed model; the message lists those there are."""


def model_named(name: str) -> LocalModel:
    """The model `--model NAME` means: an installed model's name, or a model folder's path."""
    for model in discover_models():
        if model.label == name and model.backend == "auto":
            return model
    path = Path(name).expanduser()
    if (path / MODEL_CONFIG).is_file():
        return LocalModel(path.name, path, "auto", str(path))
    names = ", ".join(m.label for m in discover_models() if m.backend == "auto")
    raise UnknownModelName(
        f"no model is called {name!r}. Installed: {names}. Get more with `tandem models pull REPO` "
        "or `tandem models import FILE.gguf`."
    )


def chosen_model(model_dir: str | None, backend: Backend = "auto") -> LocalModel:
    """The model the settings name; the embedded one when none is named."""
    if model_dir is None:
        return embedded_model()
    for model in discover_models():
        if str(model.path) == model_dir and model.backend == backend:
            return model
    path = Path(model_dir)
    return LocalModel(path.name, path, backend, str(path))


class ModelUnavailable(AppError):
    """No engine can open the chosen model here; the message says why and what to do."""


def open_model(model: LocalModel, on_progress: Callable[[str, float], None] | None = None) -> Engine:
    """Open `model` on the local engine (heavy: call it off the UI thread)."""
    try:
        from engine.loader import open_engine
    except ImportError as missing:
        raise ModelUnavailable(
            f"This build has no local engine ({missing.name or 'engine.loader'} is missing); reinstall Tandem."
        ) from missing
    if not model.path.is_dir():
        raise ModelUnavailable(f"The model folder {model.path} does not exist; pick another with Ctrl+L.")
    from app.paths import cache_dir

    return open_engine(model.path, backend=model.backend, on_progress=on_progress, cache_dir=cache_dir())


def open_model_or_explain(model: LocalModel) -> Engine:
    """open_model for the CLI commands: any failure to load becomes ModelUnavailable, whose
    message the command prints before exiting (engine errors already name their own fix)."""
    try:
        return open_model(model)
    except ModelUnavailable:
        raise
    except (EngineError, OSError) as problem:  # the engine's errors name their own fix
        raise ModelUnavailable(f"{model.label} failed to load: {problem}") from problem
    except Exception as problem:  # last resort: logged, said to be unexpected, and re-raised as the CLI's error
        raise ModelUnavailable(f"{model.label} failed to load: {unexpected(problem)}") from problem
