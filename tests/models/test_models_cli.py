"""`tandem models` (the table), `info`, `rm`, and `--model NAME` on `tandem ask` and `tandem serve`,
on real model folders in a per-test models folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.cli import main
from app.models.catalog import ModelSource, gguf_store_dir, models_dir, write_source


def install_copy(source: Path, name: str, **config_changes) -> Path:
    """A model folder as `pull` leaves one: the files, and config changes a test asks for."""
    folder = models_dir() / name
    shutil.copytree(source, folder)
    if config_changes:
        path = folder / "mlc-chat-config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | config_changes))
    return folder


def test_the_list_shows_each_model_with_its_architecture_quantization_size_context_and_source(
    tiny_checkpoint_dir, capsys
):
    out_dir = str(models_dir() / "tiny")
    assert main(["models", "convert", str(tiny_checkpoint_dir), out_dir, "--quantization", "q0f32"]) == 0
    capsys.readouterr()

    assert main(["models"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ARCH", "QUANT", "SIZE", "CONTEXT", "SOURCE"]
    assert lines[1].split()[0] == "tandem-nano" and lines[1].split()[-1] == "embedded"
    name, arch, quant, size, unit, context, source = lines[2].split()
    assert (name, arch, quant, context, source) == ("tiny", "llama", "q0f32", "256", "converted")
    assert unit in ("kB", "MB")


def test_a_broken_model_folder_is_listed_with_its_problem(capsys):
    broken = models_dir() / "broken"
    broken.mkdir(parents=True)
    (broken / "mlc-chat-config.json").write_text("{not json")
    assert main(["models"]) == 0
    assert "unusable:" in capsys.readouterr().out


def test_info_describes_a_model_and_an_unknown_name_lists_the_names(tiny_mlc_dir, capsys):
    folder = install_copy(tiny_mlc_dir, "tiny")
    write_source(folder, ModelSource("hub", "hf:tandem-test/tiny@abc", "MLC weights as they are"))

    assert main(["models", "info", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "source:       hub: hf:tandem-test/tiny@abc" in out and "route:        MLC weights as they are" in out

    assert main(["models", "info", "nope"]) == 1
    assert "No model is called 'nope'. Installed: tandem-nano, tiny" in capsys.readouterr().err


def test_rm_removes_the_folder_but_never_the_embedded_model(tiny_mlc_dir, capsys):
    folder = install_copy(tiny_mlc_dir, "tiny")
    assert main(["models", "rm", "tiny"]) == 0
    assert not folder.exists()
    assert main(["models", "rm", "tandem-nano"]) == 1
    assert "cannot be removed" in capsys.readouterr().err
    assert main(["models", "rm", "tiny"]) == 1


def test_rm_leaves_a_referenced_gguf_but_drops_one_tandem_downloaded_for_that_model_alone(tiny_mlc_dir, tmp_path):
    users_file = tmp_path / "mine.gguf"
    users_file.write_bytes(b"GGUF users own file")
    mine = install_copy(tiny_mlc_dir, "mine", tandem={"gguf": {"path": str(users_file)}})
    write_source(mine, ModelSource("gguf", str(users_file)))
    pulled_file = gguf_store_dir() / "o--r" / "c" / "m.gguf"
    pulled_file.parent.mkdir(parents=True)
    pulled_file.write_bytes(b"GGUF pulled")
    for name in ("pulled", "pulled-again"):
        folder = install_copy(tiny_mlc_dir, name, tandem={"gguf": {"path": str(pulled_file)}})
        write_source(folder, ModelSource("hub", "hf:o/r@c:m.gguf", owned_files=(str(pulled_file), str(users_file))))

    assert main(["models", "rm", "mine"]) == 0
    assert users_file.is_file()
    assert main(["models", "rm", "pulled"]) == 0
    assert pulled_file.is_file()  # another model still reads it
    assert main(["models", "rm", "pulled-again"]) == 0
    assert not pulled_file.exists()
    assert users_file.is_file()  # outside Tandem's store: never deleted, whatever the record says


def test_ask_with_an_unknown_model_lists_the_names(capsys):
    assert main(["ask", "--model", "nope", "--local", "hi"]) == 2
    err = capsys.readouterr().err
    assert "no model is called 'nope'. Installed: tandem-nano" in err and "tandem models pull" in err


def test_serve_with_an_unknown_model_lists_the_names(capsys):
    assert main(["serve", "--model", "nope", "--port", "0"]) == 2
    assert "no model is called 'nope'. Installed: tandem-nano" in capsys.readouterr().err


def test_ask_answers_with_the_model_named(tiny_mlc_dir, capsys):
    install_copy(tiny_mlc_dir, "tiny")
    assert main(["ask", "--model", "tiny", "--local", "--json", "hello there"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["route"], result["status"]) == ("local", "complete")
    assert result["model"] == "tiny" and result["tokens_out"] > 0


@pytest.fixture(autouse=True)
def no_mlc_llm(monkeypatch):
    """The lists offer MLC LLM twins only where mlc_llm is installed; keep them machine-free."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlc_llm" else real(name, *a))
