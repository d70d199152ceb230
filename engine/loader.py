"""Opening a local model: the mlc backend when mlc_llm imports, else Tandem's own TVM runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.api import BACKENDS, Backend, Engine
from engine.errors import BackendUnavailable, EngineError

__all__ = ["Backend", "open_engine"]


def open_engine(
    model_dir: Path | str,
    backend: Backend = "auto",
    on_progress: Callable[[str, float], None] | None = None,
    cache_dir: Path | None = None,
) -> Engine:
    """An engine for the MLC model directory. "auto" prefers mlc and falls back to tvm.

    Slow on a first open (imports TVM, compiles the model for this machine); run it off the
    UI thread. on_progress(stage, fraction in [0, 1]) reports what it is doing. cache_dir is
    where the tvm backend keeps compiled libraries and repacked weights (default:
    engine.cache_folder.default_cache_dir()); MLC LLM keeps its own."""
    if backend not in BACKENDS:
        raise EngineError(f"Unknown engine backend {backend!r}; use 'auto', 'mlc' or 'tvm'.")
    if backend in ("auto", "mlc"):
        from engine import mlc_backend

        try:
            return mlc_backend.MLCBackendEngine(model_dir, on_progress=on_progress)
        except BackendUnavailable:
            if backend == "mlc":
                raise
    return _open_tvm(model_dir, on_progress, cache_dir)


def _open_tvm(
    model_dir: Path | str, on_progress: Callable[[str, float], None] | None, cache_dir: Path | None
) -> Engine:
    try:
        from engine.tvm_backend.runtime import TVMEngine
    except ImportError as error:
        raise BackendUnavailable(
            f"The tvm backend needs apache-tvm ({error}). Install it with `pip install apache-tvm`."
        ) from error
    return TVMEngine(model_dir, on_progress=on_progress, cache_dir=cache_dir)
