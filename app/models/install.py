"""Putting a finished model into the models folder: hidden staging folders that are renamed into
place only when complete (and removed on any failure), and the free-disk check before starting."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.errors import AppError
from app.models.catalog import ModelSource, check_name, models_dir, write_source


class InstallError(AppError):
    """The model cannot be put in place; the message says why and what to do."""


def destination(name: str, overwrite: bool = False) -> Path:
    """The folder `name` will have; InstallError when it is taken (unless `overwrite`)."""
    check_name(name)
    final = models_dir() / name
    if final.exists() and not overwrite:
        raise InstallError(
            f"A model called {name} is already installed ({final}). Choose another with --name, "
            f"or remove it first with `tandem models rm {name}`."
        )
    return final


@contextmanager
def staged(name: str) -> Iterator[Path]:
    """A hidden path in the models folder to build the model at (not created: writers that stage
    themselves want it absent). Removed, with any `.partial` beside it, if the block fails."""
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}.staging"
    _remove(staging)
    try:
        yield staging
    except BaseException:
        _remove(staging)
        _remove(staging.with_name(f".{staging.name}.partial"))  # engine.convert's own staging
        raise


def commit(staging: Path, final: Path, source: ModelSource) -> Path:
    """Record where the model came from and rename it into place (replacing `final`, if there)."""
    write_source(staging, source)
    if final.exists():
        _remove(final)
    staging.rename(final)
    return final


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """InstallError when the disk holding `folder` has less than `needed` bytes free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise InstallError(
            f"{what} needs {needed / 1e9:.2f} GB but {folder} has {free / 1e9:.2f} GB free; "
            "free some space and run the command again."
        )


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
