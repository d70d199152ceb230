"""Opening engines: backend choice (mlc is not installable here, so only its absence is
testable), the compile cache across processes, a damaged cache entry, and progress reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import BackendUnavailable, EngineError
from engine.loader import open_engine

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENS = [5, 17, 42, 99, 3, 250, 7]

CHILD = """
import json, sys
from engine.loader import open_engine
engine = open_engine(sys.argv[1], backend="tvm")
engine.session.reset()
logits = engine.session.prefill(json.loads(sys.argv[2]))
print(json.dumps({"compile_s": engine.compile_s, "logits": logits.tolist()}))
"""


def run_child(model_dir: Path, **env_overrides: str) -> dict:
    """Open the engine in a new Python process; its compile_s and prefill logits of TOKENS."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env_overrides}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_dir), json.dumps(TOKENS)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_mlc_backend_reports_why_it_is_unavailable(tiny_mlc_model):
    with pytest.raises(BackendUnavailable, match="mlc_llm"):
        open_engine(tiny_mlc_model("q0f32"), backend="mlc")


def test_auto_falls_back_to_tvm(tiny_mlc_model):
    engine = open_engine(tiny_mlc_model("q0f32"), backend="auto")
    assert engine.info.backend == "tvm"
    engine.close()


def test_unknown_backend_is_refused(tiny_mlc_model):
    with pytest.raises(EngineError, match="Unknown engine backend"):
        open_engine(tiny_mlc_model("q0f32"), backend="onnx")


def test_a_new_process_loads_the_cached_library_and_gets_the_same_logits(tiny_mlc_model):
    model_dir = tiny_mlc_model("q4f32_1", model_type="qwen2", tie=False)
    engine = open_engine(model_dir, backend="tvm")
    engine.session.reset()
    here = engine.session.prefill(TOKENS)
    engine.close()

    there = run_child(model_dir)
    assert there["compile_s"] == 0.0  # loaded from the cache, not compiled again
    np.testing.assert_allclose(np.array(there["logits"], dtype=np.float32), here, atol=1e-6)


def test_a_damaged_cache_entry_is_rebuilt_in_the_next_process(tiny_mlc_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = tiny_mlc_model("q0f32")
    stages: list[tuple[str, float]] = []
    first = open_engine(model_dir, backend="tvm", on_progress=lambda stage, f: stages.append((stage, f)))
    first.session.reset()
    expected = first.session.prefill(TOKENS)
    first.close()
    assert first.compile_s > 0
    fractions = [fraction for _, fraction in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("compiling" in stage for stage, _ in stages)

    (library,) = (tmp_path / "cache").rglob("model.so")
    # Truncated, as by a full disk. A new file at that path: truncating the one this process has
    # mapped would fault its pages (SIGBUS) when the library is touched again, at exit at the latest.
    damaged = library.read_bytes()[:1000]
    library.unlink()
    library.write_bytes(damaged)
    rebuilt = run_child(model_dir, TANDEM_CACHE_DIR=str(tmp_path / "cache"))
    assert rebuilt["compile_s"] > 0
    np.testing.assert_allclose(np.array(rebuilt["logits"], dtype=np.float32), expected, atol=1e-6)
