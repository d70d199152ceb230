"""The engine's default cache folder (compiled libraries, repacked weights) for callers that name
none: $TANDEM_CACHE_DIR, else the platform's user cache directory. The app passes its own."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "TANDEM_CACHE_DIR"


def default_cache_dir() -> Path:
    """$TANDEM_CACHE_DIR when set, else the user cache directory for "tandem" (safe to delete)."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tandem", appauthor=False))
