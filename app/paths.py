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
    """The folder for compiled model libraries and repacked weights (safe to delete), which the
    app hands to the engine: $TANDEM_CACHE_DIR, else TANDEM_HOME/cache, else the user cache."""
    from engine.cache_folder import CACHE_DIR_ENV, default_cache_dir

    home = os.environ.get("TANDEM_HOME")
    if home and not os.environ.get(CACHE_DIR_ENV):
        return Path(home).expanduser() / "cache"
    return default_cache_dir()


def default_db_path() -> Path:
    return data_dir() / "tandem.db"
