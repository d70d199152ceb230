"""Where Tandem keeps its data and caches: TANDEM_HOME, else the platform's user directories."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The folder for the database and user settings."""
    home = os.environ.get("TANDEM_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("tandem", appauthor=False))


def cache_dir() -> Path:
    """The folder for compiled model libraries and repacked weights (safe to delete)."""
    override = os.environ.get("TANDEM_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    home = os.environ.get("TANDEM_HOME")
    if home:
        return Path(home).expanduser() / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("tandem", appauthor=False))


def default_db_path() -> Path:
    return data_dir() / "tandem.db"
