"""The models installed in Tandem's models folder: what each is (architecture, quantization, size,
context, where it came from), finding one by name, and removing one."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.errors import AppError
from app.paths import data_dir

MODEL_CONFIG = "mlc-chat-config.json"
SOURCE_FILE = "tandem-source.json"
EMBEDDED_NAME = "tandem-nano"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def models_dir() -> Path:
    """Where pulled, imported and converted models live, one folder each."""
    return data_dir() / "models"


def downloads_dir() -> Path:
    """Partial and finished downloads; outside the models folder so nothing half-written is listed."""
    return data_dir() / "downloads"


def gguf_store_dir() -> Path:
    """GGUF files pulled from the Hub, which the models made from them reference."""
    return data_dir() / "gguf"


@dataclass(frozen=True)
class ModelSource:
    """Where a model came from, kept beside it in tandem-source.json."""

    kind: str
    """"hub", "gguf", "ollama", "converted", "embedded" or "unknown"."""
    origin: str = ""
    """e.g. "hf:owner/name@<commit>", "ollama:llama3.2:1b", or the GGUF's path."""
    route: str = ""
    """How the weights got in (the importer's route, or "as is", or "converted to q4f16_1")."""
    owned_files: tuple[str, ...] = ()
    """Files outside the folder that Tandem downloaded for this model (removed with it)."""

    def describe(self) -> str:
        return f"{self.kind}: {self.origin}" if self.origin else self.kind


@dataclass(frozen=True)
class ModelRecord:
    name: str
    path: Path
    architecture: str
    quantization: str
    context: int | None
    size_bytes: int
    source: ModelSource
    embedded: bool = False
    referenced: Path | None = None
    """The GGUF the model reads its weights from, when it references one instead of holding them."""
    problem: str | None = None
    """Why the folder cannot be used, when it cannot."""
    tensor_types: dict[str, int] = field(default_factory=dict)


class UnknownModel(AppError, LookupError):
    """No installed model has that name; the message lists the names there are."""


class ModelNameError(AppError, ValueError):
    """A name Tandem cannot give a model folder."""


def check_name(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise ModelNameError(
            f"{name!r} cannot name a model: use lower-case letters, digits, '.', '-' and '_' "
            "(for example smollm2-135m-instruct-q4_1)."
        )
    return name


def write_source(model_dir: Path, source: ModelSource) -> None:
    data = asdict(source)
    data["owned_files"] = list(source.owned_files)
    (model_dir / SOURCE_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_source(model_dir: Path) -> ModelSource:
    try:
        data = json.loads((model_dir / SOURCE_FILE).read_text(encoding="utf-8"))
        return ModelSource(
            kind=str(data.get("kind", "unknown")),
            origin=str(data.get("origin", "")),
            route=str(data.get("route", "")),
            owned_files=tuple(str(p) for p in data.get("owned_files", ())),
        )
    except (OSError, ValueError, AttributeError):
        return ModelSource("converted")  # `tandem models convert` writes no source file


def embedded_record() -> ModelRecord:
    from assets import embedded_model_dir

    record = read_record(embedded_model_dir(), EMBEDDED_NAME)
    return ModelRecord(**{**record.__dict__, "embedded": True, "source": ModelSource("embedded", "ships with Tandem")})


def installed_models() -> list[ModelRecord]:
    """The embedded model first, then every folder in the models folder holding a model config."""
    found = [embedded_record()]
    root = models_dir()
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
            if (folder / MODEL_CONFIG).is_file():
                found.append(read_record(folder, folder.name))
    return found


def find_model(name: str) -> ModelRecord:
    """The installed model called `name`; UnknownModel lists the names there are."""
    models = installed_models()
    for model in models:
        if model.name == name:
            return model
    names = ", ".join(m.name for m in models)
    raise UnknownModel(f"No model is called {name!r}. Installed: {names}. `tandem models` lists them.")


def remove_model(name: str) -> ModelRecord:
    """Delete the model's folder (and the files Tandem downloaded for it alone). Never the embedded
    model; a GGUF it references (an Ollama blob, a file of yours) is left where it is."""
    model = find_model(name)
    if model.embedded:
        raise ModelNameError(f"{name} is the embedded model that ships with Tandem; it cannot be removed.")
    still_needed = {
        f for other in installed_models() if other.name != name for f in other.source.owned_files
    }
    shutil.rmtree(model.path)
    store = gguf_store_dir().resolve()
    for owned in model.source.owned_files:
        path = Path(owned)
        # Only ever delete inside Tandem's own store, whatever the source file says.
        if owned not in still_needed and path.resolve().is_relative_to(store):
            path.unlink(missing_ok=True)
    return model


def read_record(folder: Path, name: str) -> ModelRecord:
    """What the folder's config says, read leniently so a broken model still lists (with its problem)."""
    source = read_source(folder)
    try:
        config: dict[str, Any] = json.loads((folder / MODEL_CONFIG).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        unreadable = f"{folder / MODEL_CONFIG} cannot be read ({error}); remove the model and get it again."
        return ModelRecord(name, folder, "?", "?", None, _folder_bytes(folder), source, problem=unreadable)
    gguf = (config.get("tandem") or {}).get("gguf") or {}
    referenced = Path(gguf["path"]) if isinstance(gguf, dict) and gguf.get("path") else None
    size = _folder_bytes(folder)
    problem: str | None = None
    if referenced is not None:
        if referenced.is_file():
            if not referenced.resolve().is_relative_to(folder.resolve()):
                size += referenced.stat().st_size
        else:
            problem = f"the GGUF it references, {referenced}, is gone; remove the model and import it again."
    if problem is None:
        problem = _config_problem(folder)
    context = config.get("context_window_size")
    return ModelRecord(
        name=name,
        path=folder,
        architecture=str(config.get("model_type", "?")),
        quantization=str(config.get("quantization", "?")),
        context=int(context) if isinstance(context, int) else None,
        size_bytes=size,
        source=source,
        referenced=referenced,
        problem=problem,
        tensor_types=dict(gguf.get("tensor_types") or {}) if isinstance(gguf, dict) else {},
    )


def _config_problem(folder: Path) -> str | None:
    """Why the engine would refuse the folder's config (an unsupported architecture, a bad
    field), or None when it reads."""
    from engine.config import read_chat_config
    from engine.errors import ModelFileError

    try:
        read_chat_config(folder)
    except ModelFileError as error:
        return str(error)
    return None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def human_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
