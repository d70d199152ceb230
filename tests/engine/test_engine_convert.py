"""Converting tiny random transformers checkpoints into MLC directories, and reading them back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.artifact import decode_bf16, encode_bf16, load_params
from engine.config import read_chat_config
from engine.convert import convert_hf_checkpoint
from engine.errors import ModelFileError
from engine.hf_checkpoint import HFCheckpoint

REPO_ROOT = Path(__file__).resolve().parents[2]


def bf16_round(array: np.ndarray) -> np.ndarray:
    return decode_bf16(encode_bf16(array.astype(np.float32)))


CASES = [
    pytest.param(dict(model_type="llama", tie=True), id="llama-tied"),
    pytest.param(dict(model_type="llama", tie=False), id="llama-untied"),
    pytest.param(dict(model_type="qwen2", tie=False), id="qwen2-untied"),
    pytest.param(dict(model_type="qwen2", tie=True), id="qwen2-tied"),
]


@pytest.mark.parametrize("checkpoint_args", CASES)
@pytest.mark.parametrize("quantization", ["q4f16_1", "q4f32_1", "q0f32", "q0f16"])
def test_converted_weights_restore_the_hf_weights(
    tiny_hf_checkpoint, tiny_mlc_model, hf_weights_from_mlc, checkpoint_args, quantization
):
    model_dir = tiny_mlc_model(quantization, **checkpoint_args)
    assert read_chat_config(model_dir).quantization == quantization
    restored = hf_weights_from_mlc(model_dir)
    checkpoint = HFCheckpoint(tiny_hf_checkpoint(**checkpoint_args))
    reference = {name: checkpoint.tensor(name) for name in restored}
    assert set(reference) == set(checkpoint.tensor_names) - ({"lm_head.weight"} if checkpoint_args["tie"] else set())
    for name, weight in reference.items():
        got = restored[name]
        assert got.shape == weight.shape, name
        if name.endswith(("norm.weight", ".bias")) or quantization.startswith("q0"):
            if quantization.endswith(("f32", "f32_1")):
                expected = bf16_round(weight)  # MLC stores float32 as bf16 on disk
            else:
                expected = weight.astype(np.float16).astype(np.float32)
            np.testing.assert_array_equal(got, expected, err_msg=name)
        else:
            groups = weight.reshape(weight.shape[0], -1, 32)
            half_step = np.abs(groups).max(axis=2, keepdims=True) / 7 / 2
            # q4f16_1 rounds each step to fp16; q4f32_1 stores its scales as bf16 (up to 7 codes
            # times 2^-9 of a scale more)
            slack = 1.06 if quantization == "q4f32_1" else 1.03
            error = np.abs(got.reshape(groups.shape) - groups)
            assert np.all(error <= half_step * slack + 1e-6), name


def test_chat_config_describes_the_model(tiny_hf_checkpoint, tiny_mlc_model):
    model_dir = tiny_mlc_model("q4f16_1", model_type="qwen2", tie=False)
    config = read_chat_config(model_dir)
    hf = json.loads((tiny_hf_checkpoint(model_type="qwen2", tie=False) / "config.json").read_text())
    model = config.model_config
    assert (model.model_type, model.hidden_size, model.num_key_value_heads) == ("qwen2", 64, 2)
    assert model.vocab_size == hf["vocab_size"] and not model.tie_word_embeddings and model.attention_bias
    assert config.conv_template.name == "qwen2"
    assert config.conv_template.stop_token_ids == (0, 2)  # <|endoftext|>, <|im_end|> in this vocab
    assert config.eos_token_ids == (2,)
    assert (model_dir / "tokenizer.json").is_file() and "tokenizer.json" in config.tokenizer_files
    assert config.tokenizer_info["token_postproc_method"] == "byte_level"
    params = json.loads((model_dir / "tensor-cache.json").read_text())
    names = {r["name"] for shard in params["records"] for r in shard["records"]}
    assert "model.layers.0.self_attn.c_attn.bias" in names and "lm_head.q_weight" in names


def test_llama3_style_tokenizer_gets_the_llama3_template(tiny_mlc_model):
    config = read_chat_config(tiny_mlc_model("q4f16_1", model_type="llama", tie=True, style="llama-3"))
    template = config.conv_template
    assert template.name == "llama-3"
    assert template.system_prefix_token_ids == (0,)  # <|begin_of_text|> in this vocab
    assert set(template.stop_token_ids) == {1, 4}  # <|end_of_text|>, <|eot_id|>


def test_tinyllama_style_tokenizer_gets_its_template(tiny_mlc_model):
    config = read_chat_config(tiny_mlc_model("q4f16_1", model_type="llama", tie=False, style="tinyllama"))
    template = config.conv_template
    assert template.name == "tinyllama_v1_0"
    assert template.system_prefix_token_ids == (1,) and template.stop_token_ids == (2,)  # <s>, </s>
    assert config.tokenizer_info["token_postproc_method"] == "byte_fallback"


def test_bf16_checkpoint_converts_exactly(tiny_hf_checkpoint, tiny_mlc_model, hf_weights_from_mlc):
    restored = hf_weights_from_mlc(tiny_mlc_model("q0f32", model_type="llama", tie=False, dtype="bfloat16"))
    checkpoint = HFCheckpoint(tiny_hf_checkpoint(model_type="llama", tie=False, dtype="bfloat16"))
    for name, weight in restored.items():
        np.testing.assert_array_equal(weight, checkpoint.tensor(name), err_msg=name)  # bf16 survives bf16 storage


def test_config_that_does_not_match_the_weights_is_caught_at_load(tiny_mlc_model, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_mlc_model("q4f16_1"), model_dir)
    config_path = model_dir / "mlc-chat-config.json"
    config = json.loads(config_path.read_text())
    config["model_config"]["intermediate_size"] = 256
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=r"tensor-cache.json: model.layers.0.mlp.gate_up_proj.q_weight is uint32"):
        load_params(model_dir, read_chat_config(model_dir))


def test_template_the_tokenizer_lacks_is_refused(tiny_hf_checkpoint, tmp_path):
    with pytest.raises(ModelFileError, match=r"tokenizer.json lacks .*<\|start_header_id\|>.*--conv-template"):
        convert_hf_checkpoint(tiny_hf_checkpoint(), tmp_path / "out", "q4f16_1", conv_template="llama-3")
    assert not (tmp_path / "out").exists()


def test_missing_lm_head_is_named(tiny_hf_checkpoint, tmp_path):
    source = tiny_hf_checkpoint(model_type="llama", tie=True)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    for item in source.iterdir():
        (hf_dir / item.name).write_bytes(item.read_bytes())
    config = json.loads((hf_dir / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=r"lack lm_head.weight \(config.json says the embeddings are untied\)"):
        convert_hf_checkpoint(hf_dir, tmp_path / "out", "q4f16_1")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_tandem_extras_land_in_the_chat_config(tiny_hf_checkpoint, tmp_path):
    extras = {"refusal": "I can't answer that here: it needs a bigger model.", "skills": ["app-help"]}
    convert_hf_checkpoint(tiny_hf_checkpoint(), tmp_path / "out", "q0f16", tandem_extras=extras)
    assert read_chat_config(tmp_path / "out").tandem == extras


def test_converting_over_the_checkpoint_itself_is_refused(tiny_hf_checkpoint):
    source = tiny_hf_checkpoint()
    with pytest.raises(ModelFileError, match="holds the checkpoint being converted"):
        convert_hf_checkpoint(source, source, "q0f16", overwrite=True)
    with pytest.raises(ModelFileError, match="holds the checkpoint being converted"):
        convert_hf_checkpoint(source, source.parent, "q0f16", overwrite=True)
    assert (source / "config.json").is_file()


def test_overwrite_replaces_an_older_conversion(tiny_hf_checkpoint, tmp_path):
    out = tmp_path / "out"
    convert_hf_checkpoint(tiny_hf_checkpoint(), out, "q0f16")
    convert_hf_checkpoint(tiny_hf_checkpoint(), out, "q4f16_1", overwrite=True)
    assert read_chat_config(out).quantization == "q4f16_1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_existing_output_is_kept_without_overwrite(tiny_hf_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ModelFileError, match="already exists.*--overwrite"):
        convert_hf_checkpoint(tiny_hf_checkpoint(), out, "q0f16")
    assert (out / "notes.txt").read_text() == "mine"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_converts_and_lists(tiny_hf_checkpoint, isolated_home):
    done = run_cli("models", "convert", str(tiny_hf_checkpoint()), "--quantization", "q4f32_1")
    assert done.returncode == 0, done.stderr
    out_dir = isolated_home / "models" / f"{tiny_hf_checkpoint().name}-q4f32_1"
    assert f"Wrote {out_dir}" in done.stdout
    assert read_chat_config(out_dir).quantization == "q4f32_1"
    listed = run_cli("models")
    assert listed.returncode == 0 and out_dir.name in listed.stdout and "q4f32_1" in listed.stdout


def test_cli_bad_hf_dir_is_one_clear_line(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_cli("models", "convert", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json is missing" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_safetensors_reader_matches_the_safetensors_library(tiny_hf_checkpoint):
    from safetensors.torch import load_file

    for dtype in ("float32", "bfloat16"):
        folder = tiny_hf_checkpoint(model_type="qwen2", tie=False, dtype=dtype)
        checkpoint = HFCheckpoint(folder)
        (path,) = folder.glob("*.safetensors")
        reference = load_file(path)
        assert set(reference) == set(checkpoint.tensor_names)
        for name, tensor in reference.items():
            np.testing.assert_array_equal(checkpoint.tensor(name), tensor.float().numpy(), err_msg=name)


def test_truncated_safetensors_is_named(tiny_hf_checkpoint, tmp_path):
    hf_dir = tmp_path / "hf"
    shutil.copytree(tiny_hf_checkpoint(), hf_dir)
    (weights,) = hf_dir.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match=r"model.safetensors is truncated"):
        convert_hf_checkpoint(hf_dir, tmp_path / "out", "q4f16_1")


def test_cli_lists_a_broken_model_as_unusable(isolated_home):
    broken = isolated_home / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "mlc-chat-config.json").write_text('{"model_type": "gpt2"}')
    done = run_cli("models")
    assert done.returncode == 0
    assert "broken" in done.stdout and "unusable" in done.stdout and "gpt2" in done.stdout
