"""Writing a model directory all or nothing: files go into a hidden staging folder beside it,
which replaces the directory only once everything is written (and is removed on any failure)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """Yield `.{name}.partial` beside `out`, empty; when the block ends without error it replaces
    `out`, so a crash or Ctrl+C never leaves a half-written model where one is expected."""
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that died mid-write
    staging.mkdir(parents=True)
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
