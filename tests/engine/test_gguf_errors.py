"""Bad GGUF files give a ModelFileError that names the file and the fix: truncated, not a GGUF,
an unknown architecture, an unknown or unreadable tensor type, a missing tensor."""

from __future__ import annotations

import shutil
import struct

import pytest
from gguf_fixtures import tiny_gguf  # noqa: F401

from engine.errors import ModelFileError
from engine.gguf import GGUFFile, load_block_tensors, read_model_config


def read_all(path):
    gguf = GGUFFile(path)
    return load_block_tensors(gguf, read_model_config(gguf))


@pytest.mark.parametrize("keep", [0, 3, 100, 2000, -1000])
def test_a_truncated_file_says_so(tiny_gguf, tmp_path, keep):
    source = tiny_gguf(types="Q4_0").path
    data = source.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(ModelFileError) as error:
        read_all(cut)
    message = str(error.value)
    assert str(cut) in message
    assert ("truncated" in message or "empty" in message) and "again" in message


def test_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a model" * 10)
    with pytest.raises(ModelFileError, match="is not a GGUF file"):
        read_all(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        read_all(tmp_path / "nowhere.gguf")


def test_an_unknown_architecture(tiny_gguf):
    path = tiny_gguf(arch="phi3").path
    with pytest.raises(ModelFileError) as error:
        read_all(path)
    assert str(path) in str(error.value) and "architecture 'phi3' is not supported" in str(error.value)
    assert "llama and qwen2" in str(error.value)


def test_an_unknown_tensor_type_number(tiny_gguf, tmp_path):
    source = tiny_gguf(types="Q8_0").path
    data = bytearray(source.read_bytes())
    # Tensor info: name (u64 length + bytes), u32 n_dims, n_dims x u64 dims, u32 type, u64 offset.
    name = b"blk.0.attn_q.weight"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * dims, 99)
    path = tmp_path / "odd.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as error:
        read_all(path)
    assert str(path) in str(error.value) and "type 99" in str(error.value) and "llama-quantize" in str(error.value)


def test_a_tensor_type_nothing_can_read(tiny_gguf):
    path = tiny_gguf(types={"ffn_down": "I8"}).path
    with pytest.raises(ModelFileError) as error:
        read_all(path)
    assert "blk.0.ffn_down.weight is stored as I8" in str(error.value) and "llama-quantize" in str(error.value)


def test_a_missing_tensor(tiny_gguf):
    path = tiny_gguf(skip=("blk.1.ffn_up.weight",)).path
    with pytest.raises(ModelFileError) as error:
        read_all(path)
    assert str(path) in str(error.value) and "'blk.1.ffn_up.weight'" in str(error.value)


def test_untied_config_against_a_tied_file_names_the_output_tensor(tiny_gguf, tmp_path):
    from dataclasses import replace

    path = tmp_path / "tied.gguf"
    shutil.copy(tiny_gguf(tie=True).path, path)
    config = replace(read_model_config(path), tie_word_embeddings=False)
    with pytest.raises(ModelFileError, match="'output.weight'"):
        load_block_tensors(path, config)
