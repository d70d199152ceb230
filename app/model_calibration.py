"""The calibration the router gets for the open model: the user's own fit (data dir, keyed by model
and quantization), one shipped in the model's folder, the embedded model's shipped fit, else the
model-agnostic default with a notice."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.api import Backend, Engine
    from offload.calibrations import ActiveCalibration


def calibration_for(engine: Engine | None, model_dir: str | None, backend: Backend = "auto") -> ActiveCalibration | None:
    """An offload.calibrations.ActiveCalibration for `engine`, opened from `model_dir` (None: the
    embedded model); None when there is no engine yet (the router then takes the embedded fit)."""
    from app.local_models import chosen_model
    from app.paths import data_dir
    from offload.calibrations import MODEL_FOLDER_FILE, ModelIdentity, data_dir_path, resolve
    from offload.confidence import Calibration

    if engine is None or getattr(engine, "info", None) is None:  # not open yet (or a snapshot's stand-in)
        return None
    identity = ModelIdentity.of(engine.info)
    folder: Path = chosen_model(model_dir, backend).path
    candidates = [data_dir_path(data_dir(), identity), folder / MODEL_FOLDER_FILE]
    shipped = Calibration.load() if model_dir is None else None  # the embedded model's own fit
    return resolve(identity, candidates, shipped=shipped)
