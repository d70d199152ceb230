"""The warm start: once a model's library and weights are cached, the next open (in a fresh
process, as `tandem ask` is) loads them with TVM's runtime alone, never importing the compiler,
torch or ml_dtypes, and computes the same logits; a changed setting or model file, or a record
whose entries are gone, takes the full path again. A GGUF model directory starts warm too,
without reading its file, until the file changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.loader import open_engine
from engine.tvm_backend import warm_start
from gguf_fixtures import tiny_gguf  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENS = [5, 17, 42, 99, 3, 250, 7]
SHARED_CACHE = Path(os.environ["TANDEM_CACHE_DIR"])
WARM_OPEN = """
import json, sys
import numpy as np
from engine.loader import open_engine
engine = open_engine(sys.argv[1], backend="tvm")
engine.session.reset()
np.save(sys.argv[2], engine.session.prefill([int(t) for t in sys.argv[3].split(",")]))
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({
    "warm": engine.warm_start,
    "weights_cache_hit": engine.weights_cache_hit,
    "device": engine.info.device,
    "tvm_modules": sorted(name for name in sys.modules if name == "tvm" or name.startswith("tvm.")),
    "heavy": [name for name in ("torch", "ml_dtypes") if name in loaded],
}))
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own, sharing the test-wide compiled libraries."""
    root = tmp_path / "cache"
    root.mkdir()
    (SHARED_CACHE / "libs").mkdir(parents=True, exist_ok=True)
    (root / "libs").symlink_to(SHARED_CACHE / "libs", target_is_directory=True)
    monkeypatch.setenv("TANDEM_CACHE_DIR", str(root))
    return root


@pytest.fixture
def model_dir(tiny_mlc_model, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_mlc_model("q4f16_1"), tmp_path / "model"))


def full_open(model_dir: Path) -> tuple[np.ndarray, object]:
    """(prefill logits of TOKENS, the engine's info) from an open in this process."""
    engine = open_engine(model_dir, backend="tvm")
    try:
        engine.session.reset()
        return engine.session.prefill(TOKENS), engine
    finally:
        engine.close()


def open_in_fresh_process(model_dir: Path, tmp_path: Path) -> tuple[np.ndarray, dict]:
    logits_file = tmp_path / "warm-logits.npy"
    done = subprocess.run(
        [sys.executable, "-c", WARM_OPEN, str(model_dir), str(logits_file), ",".join(map(str, TOKENS))],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return np.load(logits_file), json.loads(done.stdout.strip().splitlines()[-1])


def test_a_warm_open_imports_only_the_runtime_and_computes_the_same_logits(model_dir, cache, tmp_path):
    expected, engine = full_open(model_dir)
    assert not engine.warm_start
    logits, report = open_in_fresh_process(model_dir, tmp_path)
    assert report["warm"] and report["weights_cache_hit"]
    assert report["tvm_modules"] == [], "the warm path imported TVM's Python package (the compiler)"
    assert report["heavy"] == []
    assert report["device"] == engine.info.device
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-6)


def test_a_changed_setting_or_model_file_invalidates_the_warm_start(model_dir, cache, monkeypatch):
    full_open(model_dir)
    key = warm_start.warm_key(model_dir, None)
    assert warm_start.find(model_dir, None, cache) is not None

    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")
    assert warm_start.warm_key(model_dir, None) != key
    assert warm_start.find(model_dir, None, cache) is None
    monkeypatch.delenv("TANDEM_CPU_MATMUL")
    assert warm_start.find(model_dir, "cpu", cache) is None, "another asked-for device has its own record"

    shard = next(model_dir.glob("params_shard_*.bin"))
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert warm_start.warm_key(model_dir, None) != key
    _, engine = full_open(model_dir)
    assert not engine.warm_start, "the model's files changed: the full path checks them"


def test_a_warm_record_whose_entries_are_gone_falls_back_to_the_full_path(model_dir, cache):
    expected, _ = full_open(model_dir)
    (record_file,) = (cache / warm_start.WARM_DIR).glob("*.json")
    record = json.loads(record_file.read_text())
    record["library_entry"] = str(cache / "libs" / "deleted-by-someone")
    record_file.write_text(json.dumps(record))

    logits, engine = full_open(model_dir)
    assert not engine.warm_start
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-6)
    assert warm_start.find(model_dir, None, cache).library_entry != Path(record["library_entry"])
    _, engine = full_open(model_dir)
    assert engine.warm_start, "the full open recorded a working warm start again"


def test_no_warm_start_is_recorded_where_the_cache_cannot_be_written(model_dir, cache):
    (cache / warm_start.WARM_DIR).write_text("not a folder")  # root ignores permission bits
    full_open(model_dir)
    assert warm_start.find(model_dir, None, cache) is None
    _, engine = full_open(model_dir)
    assert not engine.warm_start


REFUSE_GGUF_READS = """
import engine.gguf.reader
def _refuse(*args, **kwargs):
    raise AssertionError("the warm path read the GGUF file")
engine.gguf.reader.GGUFFile.__init__ = _refuse
"""


@pytest.fixture
def gguf_model_dir(tiny_gguf, tmp_path) -> tuple[Path, Path]:
    """(a GGUF file of this test's own, the model directory that runs it in place)."""
    from engine.gguf.importer import import_gguf

    path = Path(shutil.copy(tiny_gguf(types="Q4_1").path, tmp_path / "tiny.gguf"))
    import_gguf(path, tmp_path / "gguf-model")
    return path, tmp_path / "gguf-model"


def test_a_gguf_model_starts_warm_without_reading_its_file(gguf_model_dir, cache, tmp_path):
    gguf_path, model_dir = gguf_model_dir
    expected, engine = full_open(model_dir)
    assert not engine.warm_start
    logits_file = tmp_path / "warm-logits.npy"
    done = subprocess.run(
        [sys.executable, "-c", REFUSE_GGUF_READS + WARM_OPEN, str(model_dir), str(logits_file), ",".join(map(str, TOKENS))],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["warm"] and report["weights_cache_hit"]
    assert report["tvm_modules"] == [] and report["heavy"] == []
    np.testing.assert_allclose(np.load(logits_file), expected, rtol=0, atol=1e-6)

    # The file changed (a rewrite moves its mtime): the full path reads it again.
    stat = gguf_path.stat()
    os.utime(gguf_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert warm_start.find(model_dir, None, cache, (gguf_path,)) is None
    _, engine = full_open(model_dir)
    assert not engine.warm_start
    _, engine = full_open(model_dir)
    assert engine.warm_start, "the full open recorded the changed file's warm start"
