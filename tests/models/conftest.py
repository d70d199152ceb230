"""Fixtures for getting models: a real Hugging Face-compatible Hub on 127.0.0.1 (hub_server.py),
tiny Llama checkpoints and their MLC conversions as repository files (built once per session with
the engine tests' own builders), and the HF_ENDPOINT the CLI reads, pointed at the local Hub."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import FakeHub

ENGINE_TESTS = Path(__file__).resolve().parent.parent / "engine"


def _engine_module(filename: str):
    """A helper module of the engine tests (their builders), loaded as a plain module."""
    name = f"engine_tests_{filename[:-3]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ENGINE_TESTS / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def _engine_builders():
    return _engine_module("conftest.py")


@pytest.fixture(scope="session")
def tiny_model_gguf(tmp_path_factory) -> Path:
    """A tiny llama GGUF with a tokenizer and a chat template (Q8_0 matrices), written by the
    GGUF tests' own writer: a whole model the importer takes."""
    writer = _engine_module("gguf_fixtures.py").write_tiny_gguf
    path = tmp_path_factory.mktemp("tiny-gguf") / "Tiny-Llama.Q8_0.gguf"
    writer(path, types="Q8_0")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint (save_pretrained, safetensors) with its chatml tokenizer."""
    builders = _engine_builders()
    tokenizer = builders._write_tokenizer(tmp_path_factory.mktemp("tokenizer"), "chatml")
    folder = tmp_path_factory.mktemp("hf-llama")
    builders._save_checkpoint(folder, tokenizer, "llama", True, "float32", 0, {})
    return folder


@pytest.fixture(scope="session")
def tiny_mlc_dir(tmp_path_factory, tiny_checkpoint_dir) -> Path:
    from engine.convert import convert_hf_checkpoint

    out = tmp_path_factory.mktemp("mlc") / "model"
    convert_hf_checkpoint(tiny_checkpoint_dir, out, "q4f16_1")
    return out


@pytest.fixture
def hub(monkeypatch) -> Iterator[FakeHub]:
    """A running local Hub; HF_ENDPOINT points the CLI at it, and no token is read or sent."""
    server = FakeHub()
    url = server.start()
    server.url = url
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.close()
