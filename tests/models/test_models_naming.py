"""Readable model names from repositories, GGUF file names and Ollama references."""

from __future__ import annotations

import pytest

from app.models.catalog import ModelNameError, check_name
from app.models.naming import name_for_gguf, name_for_ollama, name_for_repo


@pytest.mark.parametrize(
    ("repo", "quantization", "expected"),
    [
        ("mlc-ai/Qwen2-0.5B-Instruct-q4f16_1-MLC", None, "qwen2-0.5b-instruct-q4f16_1"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "q4f16_1", "smollm2-135m-instruct-q4f16_1"),
        ("meta-llama/Llama-3.2-1B-Instruct", "q0f16", "llama-3.2-1b-instruct-q0f16"),
    ],
)
def test_repository_names(repo, quantization, expected):
    assert name_for_repo(repo, quantization) == expected


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct-q4_1"),
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "llama-3.2-1b-instruct-q4_k_m"),
        ("sub/dir/Qwen2.5 Coder (7B).GGUF", "qwen2.5-coder-7b"),
    ],
)
def test_gguf_names(filename, expected):
    assert name_for_gguf(filename) == expected


def test_ollama_names_leave_out_latest():
    assert (name_for_ollama("llama3.2", "1b"), name_for_ollama("someone/tiny", "latest")) == ("llama3.2-1b", "someone-tiny")


@pytest.mark.parametrize("name", ["", "..", "Upper", "a/b", "-lead"])
def test_names_a_folder_cannot_take_are_refused_with_an_example(name):
    with pytest.raises(ModelNameError, match="for example"):
        check_name(name)
