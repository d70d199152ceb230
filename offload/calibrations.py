"""Which calibration a local model's confidence gets: the one fitted for it (in Tandem's data dir,
keyed by model identity and quantization, or shipped in the model's folder), else a model-agnostic
default with a notice saying why, and every label marked "uncalibrated"."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.api import EngineInfo
from offload.confidence import FEATURE_NAMES, SAMPLE_FEATURES, AbortRule, Calibration

MODEL_FOLDER_FILE = "tandem-calibration.json"
"""A calibration shipped inside a model's folder (the same format as the data dir's files)."""
DEFAULT_PATH = Path(__file__).with_name("confidence_default.json")
FORMAT_VERSION = 1


class CalibrationFileError(ValueError):
    """A calibration file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class ModelIdentity:
    """What a calibration is valid for: the same model at the same quantization."""

    model_id: str
    quantization: str

    @classmethod
    def of(cls, info: EngineInfo) -> ModelIdentity:
        """The engine's model and quantization; an imported GGUF's quantization names its file too
        (main tensor type and digest: EngineInfo.weights), so a replaced file is a stale fit."""
        weights = info.weights
        return cls(info.model_id, f"{info.quantization}-{weights}" if weights else info.quantization)

    @property
    def key(self) -> str:
        """A file-name-safe key, e.g. "SmolLM2-135M-Instruct--q4_1"."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.model_id}--{self.quantization}")

    def __str__(self) -> str:
        return f"{self.model_id} ({self.quantization})"


@dataclass(frozen=True)
class ModelCalibration:
    """A fit for one model, how it was measured, and the threshold chosen for it."""

    identity: ModelIdentity
    calibration: Calibration
    cutoff: float
    """Escalate below this confidence (chosen on the calibrate half)."""
    heldout_auroc: float | None = None
    heldout_accuracy: float | None = None
    n_fit: int = 0
    n_heldout: int = 0
    history_labels: int = 0
    """Feedback labels from the user's history that joined the fit (--from-history)."""
    abort: AbortRule | None = None
    created: str = ""
    samples: int = 0
    """Extra answers drawn per prompt for the sample-agreement features (0: the fit does not use them)."""
    sample_temperature: float | None = None
    """...at this temperature (None: the model's own)."""

    def to_json(self) -> str:
        data: dict[str, Any] = {"version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelCalibration:
        try:
            data = json.loads(text)
            if data.get("version") != FORMAT_VERSION:
                raise CalibrationFileError(
                    f"{source} has format version {data.get('version')!r}, this Tandem reads {FORMAT_VERSION}")
            abort = data.get("abort")
            stored = cls(
                identity=ModelIdentity(**data["identity"]),
                calibration=_calibration(data["calibration"]),
                cutoff=float(data["cutoff"]),
                heldout_auroc=_optional_float(data.get("heldout_auroc")),
                heldout_accuracy=_optional_float(data.get("heldout_accuracy")),
                n_fit=int(data.get("n_fit", 0)), n_heldout=int(data.get("n_heldout", 0)),
                history_labels=int(data.get("history_labels", 0)),
                abort=None if abort is None else AbortRule(
                    tuple(int(c) for c in abort["checkpoints"]), _calibration(abort["calibration"]),
                    float(abort["cutoff"])),
                created=str(data.get("created", "")),
                samples=int(data.get("samples", 0)),
                sample_temperature=_optional_float(data.get("sample_temperature")),
            )
        except CalibrationFileError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise CalibrationFileError(f"{source} is not a readable calibration ({type(error).__name__}: {error})") from error
        known = (*FEATURE_NAMES, *SAMPLE_FEATURES, *(probe.feature for probe in stored.calibration.probes))
        unknown = [n for n in stored.calibration.names if n not in known]
        if unknown:
            raise CalibrationFileError(f"{source} uses features this Tandem does not compute: {', '.join(unknown)}")
        return stored


def _calibration(data: Mapping[str, Any]) -> Calibration:
    calibration = Calibration.from_dict(data)
    sizes = {len(calibration.names), len(calibration.mean), len(calibration.scale), len(calibration.weights)}
    if len(sizes) != 1:
        raise ValueError("names, mean, scale and weights differ in length")
    return calibration


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class ActiveCalibration:
    """The calibration a router uses, and whether it was fitted for this model."""

    calibration: Calibration
    calibrated: bool
    cutoff: float | None = None
    """The stored threshold; None where the router's own threshold applies."""
    source: str = ""
    notice: str | None = None
    """Why the model-agnostic default is in use (missing, stale or corrupt), for the user."""
    abort: AbortRule | None = None
    heldout_auroc: float | None = None
    identity: ModelIdentity | None = field(default=None, compare=False)
    samples: int = 0
    """Extra answers the router draws where they could flip the route (offload.consistency)."""
    sample_temperature: float | None = None


def model_agnostic_default() -> Calibration:
    """A score over raw token-probability quantiles that ranks any model's answers sensibly
    (a surer answer never scores lower) without having seen that model."""
    return Calibration.load(DEFAULT_PATH)


def calibrations_dir(data_dir: Path) -> Path:
    return data_dir / "calibrations"


def data_dir_path(data_dir: Path, identity: ModelIdentity) -> Path:
    return calibrations_dir(data_dir) / f"{identity.key}.json"


def read(path: Path) -> ModelCalibration:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CalibrationFileError(f"{path} cannot be read ({error.strerror or error})") from error
    return ModelCalibration.from_json(text, str(path))


def save(stored: ModelCalibration, path: Path) -> Path:
    """Written whole or not at all (a temporary file renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(stored.to_json() + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def resolve(identity: ModelIdentity, candidates: Sequence[Path], shipped: Calibration | None = None) -> ActiveCalibration:
    """The first candidate file fitted for this identity; else `shipped` (a calibration that came
    with the model, e.g. the embedded model's); else the model-agnostic default with a notice."""
    problems: list[str] = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            stored = read(path)
        except CalibrationFileError as error:
            problems.append(str(error))
            continue
        if stored.identity != identity:
            problems.append(f"{path} was fitted for {stored.identity}, not {identity}")
            continue
        return ActiveCalibration(stored.calibration, True, stored.cutoff, str(path), None, stored.abort,
                                 stored.heldout_auroc, identity, stored.samples, stored.sample_temperature)
    if shipped is not None:
        notice = f"Ignoring a calibration: {'; '.join(problems)}." if problems else None
        return ActiveCalibration(shipped, True, None, "shipped with the model", notice, None, None, identity)
    why = "; ".join(problems) if problems else f"{identity} has not been calibrated"
    notice = (f"Confidence is uncalibrated: {why}. Using the model-agnostic default; run "
              f"`tandem models calibrate {identity.model_id}` to fit it for this model.")
    return ActiveCalibration(model_agnostic_default(), False, None, str(DEFAULT_PATH), notice, None, None, identity)
