"""The engine stands on its own: importing every module under engine/ pulls in nothing of app/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter so that modules the test session imported do not hide a fault.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import engine
names = ["engine"] + [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
for name in names:
    importlib.import_module(name)
upward = sorted(m for m in sys.modules if m == "app" or m.startswith("app."))
print(json.dumps({"imported": names, "app_modules": upward}))
"""


def test_no_engine_module_imports_app() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "engine.tvm_backend.runtime" in report["imported"]  # the module that used to reach up
    assert len(report["imported"]) > 40
    assert report["app_modules"] == []


def test_engine_modules_import_no_private_names_across_packages() -> None:
    """engine.tvm_backend takes only public names from engine.models (kv_cache_rope, not _kv_cache_rope)."""
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {line.strip()}"
        for path in (REPO_ROOT / "engine" / "tvm_backend").glob("*.py")
        for line in path.read_text().splitlines()
        if line.strip().startswith("from engine.models") and " import _" in line
    ]
    assert offenders == []
