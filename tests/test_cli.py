"""The `tandem` command as a user runs it."""

import subprocess
import sys

from app import __version__


def test_version_prints_and_exits_zero():
    done = subprocess.run(
        [sys.executable, "-m", "app", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"tandem {__version__}"
