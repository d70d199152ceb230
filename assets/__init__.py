"""Files Tandem ships: the embedded default model, styles and evaluation sets."""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent


def embedded_model_dir() -> Path:
    """The MLC model directory of tandem-nano, the model that works with no network and no key."""
    return ASSETS_DIR / "models" / "tandem-nano"
