"""The weight cache: a reload maps the repacked weights the first open stored, new weights or a
new layout invalidate and replace the entry, a damaged entry is rebuilt, an unwritable cache
still loads, and stale entries (and superseded compiled libraries) are pruned.

Each test opens a private copy of a tiny model with a private cache whose compiled libraries are
the test-wide ones, so only the weights are built per test."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelFileError
from engine.loader import open_engine
from engine.tvm_backend import weight_cache

TOKENS = [5, 17, 42, 99, 3, 250, 7]
SHARED_CACHE = Path(os.environ["TANDEM_CACHE_DIR"])


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own, sharing the test-wide compiled libraries."""
    root = tmp_path / "cache"
    root.mkdir()
    (SHARED_CACHE / "libs").mkdir(parents=True, exist_ok=True)
    (root / "libs").symlink_to(SHARED_CACHE / "libs", target_is_directory=True)
    monkeypatch.setenv("TANDEM_CACHE_DIR", str(root))
    return root


def copy_model(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def open_and_prefill(model_dir: Path) -> tuple[np.ndarray, bool, str | None]:
    """(prefill logits of TOKENS, whether the weights came from the cache, the cache note)."""
    engine = open_engine(model_dir, backend="tvm")
    try:
        engine.session.reset()
        return engine.session.prefill(TOKENS), engine.weights_cache_hit, engine.weight_cache_note
    finally:
        engine.close()


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"{weight_cache.WEIGHTS_DIR}/*/*{weight_cache.ENTRY_SUFFIX}"))


def unwritable(cache: Path) -> None:
    """Tests run as root, which ignores permission bits: a file where the weights folder belongs
    stands in for a cache folder that cannot be written."""
    (cache / weight_cache.WEIGHTS_DIR).write_text("not a folder")


@pytest.mark.parametrize(
    "model",
    [
        dict(quantization="q4f16_1", model_type="llama", tie=True),
        dict(quantization="q4f32_1", model_type="qwen2", tie=False),
    ],
    ids=["q4f16_1-tied", "q4f32_1-untied"],
)
def test_a_reload_hits_the_cache_with_the_logits_of_an_uncached_load(tiny_mlc_model, cache, tmp_path, model):
    model_dir = copy_model(tiny_mlc_model(**model), tmp_path / "model")
    unwritable(cache)
    uncached, hit, note = open_and_prefill(model_dir)
    assert not hit and "cannot be written" in note
    (cache / weight_cache.WEIGHTS_DIR).unlink()

    first, hit, note = open_and_prefill(model_dir)
    assert not hit and note is None
    assert len(entries(cache)) == 1
    second, hit, note = open_and_prefill(model_dir)
    assert hit and note is None
    np.testing.assert_array_equal(first, uncached)
    np.testing.assert_array_equal(second, uncached)


def test_new_weights_of_the_same_size_replace_the_entry(tiny_mlc_model, cache, tmp_path):
    model_dir = copy_model(tiny_mlc_model("q4f16_1"), tmp_path / "model")
    other = tiny_mlc_model("q4f16_1", seed=1)  # same shapes, so the same shard sizes
    before, _, _ = open_and_prefill(model_dir)
    (old_entry,) = entries(cache)

    for source in other.glob("params_shard_*.bin"):
        assert source.stat().st_size == (model_dir / source.name).stat().st_size
        shutil.copyfile(source, model_dir / source.name)
    shutil.copyfile(other / "tensor-cache.json", model_dir / "tensor-cache.json")
    after, hit, _ = open_and_prefill(model_dir)
    assert not hit
    assert not np.allclose(after, before)
    assert entries(cache) != [old_entry] and len(entries(cache)) == 1  # the stale entry is gone
    again, hit, _ = open_and_prefill(model_dir)
    assert hit
    np.testing.assert_array_equal(again, after)


def test_a_shard_changed_behind_the_index_is_caught_even_with_its_mtime_restored(tiny_mlc_model, cache, tmp_path):
    model_dir = copy_model(tiny_mlc_model("q4f16_1"), tmp_path / "model")
    open_and_prefill(model_dir)
    shard = model_dir / "params_shard_0.bin"
    stat = shard.stat()
    foreign = (tiny_mlc_model("q4f16_1", seed=1) / shard.name).read_bytes()
    shard.write_bytes(foreign)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert shard.stat().st_size == stat.st_size

    with pytest.raises(ModelFileError, match=r"params_shard_0\.bin is corrupt"):
        open_engine(model_dir, backend="tvm")


@pytest.mark.parametrize("damage", ["truncated", "end-marker", "header"])
def test_a_damaged_entry_is_rebuilt(tiny_mlc_model, cache, tmp_path, damage):
    model_dir = copy_model(tiny_mlc_model("q4f16_1"), tmp_path / "model")
    expected, _, _ = open_and_prefill(model_dir)
    (entry,) = entries(cache)
    data = bytearray(entry.read_bytes())
    size = len(data)
    if damage == "truncated":  # as by a full disk
        data = data[: size // 2]
    elif damage == "end-marker":
        data[-1] ^= 0xFF
    else:
        data[20] ^= 0xFF
    entry.unlink()  # a new file: never change in place one a process may have mapped
    entry.write_bytes(bytes(data))

    rebuilt, hit, note = open_and_prefill(model_dir)
    assert not hit and note is None
    np.testing.assert_array_equal(rebuilt, expected)
    assert entries(cache) == [entry] and entry.stat().st_size == size
    assert open_and_prefill(model_dir)[1]


def test_an_unwritable_cache_loads_from_the_model_and_writes_nothing(tiny_mlc_model, cache, tmp_path):
    model_dir = copy_model(tiny_mlc_model("q4f16_1"), tmp_path / "model")
    unwritable(cache)
    _, hit, note = open_and_prefill(model_dir)
    assert not hit
    assert note.startswith("the weight cache") and "cannot be written" in note
    assert (cache / weight_cache.WEIGHTS_DIR).read_text() == "not a folder"
    assert sorted(path.name for path in model_dir.iterdir()) == sorted(
        path.name for path in tiny_mlc_model("q4f16_1").iterdir()
    )


def test_a_new_layout_replaces_the_entry(tiny_mlc_model, cache, tmp_path, monkeypatch):
    model_dir = copy_model(tiny_mlc_model("q4f16_1"), tmp_path / "model")
    open_and_prefill(model_dir)
    (old_entry,) = entries(cache)
    monkeypatch.setattr(weight_cache, "REPACK_LAYOUT", "a layout of the future")
    _, hit, _ = open_and_prefill(model_dir)
    assert not hit
    (new_entry,) = entries(cache)
    assert new_entry != old_entry


def test_entries_of_deleted_models_are_pruned_when_another_is_stored(tiny_mlc_model, cache, tmp_path):
    gone = copy_model(tiny_mlc_model("q4f16_1"), tmp_path / "gone")
    kept = copy_model(tiny_mlc_model("q4f16_1"), tmp_path / "kept")
    open_and_prefill(gone)
    open_and_prefill(kept)
    assert len(entries(cache)) == 2
    shutil.rmtree(gone)
    fresh = copy_model(tiny_mlc_model("q4f16_1"), tmp_path / "fresh")
    open_and_prefill(fresh)

    models = {json.loads(_header_bytes(entry))["model_dir"] for entry in entries(cache)}
    assert models == {str(kept.resolve()), str(fresh.resolve())}
    assert open_and_prefill(kept)[1]


def _header_bytes(entry: Path) -> bytes:
    with entry.open("rb") as file:
        file.seek(8)
        length = int.from_bytes(file.read(8), "little")
        return file.read(length)


def test_a_new_library_prunes_the_ones_it_supersedes(tiny_mlc_model, tmp_path, monkeypatch):
    """Libraries of the same model and target built from older sources (or by an older Tandem
    whose manifests had no lineage) go; those of other models or targets stay."""
    from engine.config import read_chat_config
    from engine.models.llama import weight_kind
    from engine.tvm_backend.compiler import MANIFEST_FILE, compiled_model, lineage_key
    from engine.tvm_backend.target import cpu_target

    chat_config = read_chat_config(tiny_mlc_model("q0f32"))
    kind, target = weight_kind(chat_config.quantization), cpu_target()
    libs = tmp_path / "cache" / "libs"
    manifests = {
        "older-sources": {"lineage": lineage_key(chat_config.model_config, kind, target), "params": []},
        "another-model": {"lineage": "0" * 32, "params": []},
        "before-lineage": {"params": []},
    }
    for name, manifest in manifests.items():
        (libs / name).mkdir(parents=True)
        (libs / name / MANIFEST_FILE).write_text(json.dumps(manifest))

    compiled = compiled_model(chat_config.model_config, kind, target, tmp_path / "cache")
    assert sorted(path.name for path in libs.iterdir()) == sorted(["another-model", compiled.library.parent.name])
