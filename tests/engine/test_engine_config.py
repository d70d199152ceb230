"""Reading model and chat configs: transformers 4 and 5 layouts, and the bad-config messages."""

from __future__ import annotations

import json

import pytest

from engine.config import model_config_from_hf, read_chat_config, write_chat_config
from engine.errors import ModelFileError

HF_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 300,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}


def test_transformers_5_rope_parameters_are_read():
    config = model_config_from_hf(
        {
            **HF_LLAMA,
            "rope_parameters": {
                "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
            },
        }
    )
    assert config.rope_theta == 500000.0
    assert config.rope_scaling == {
        "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert config.head_dim == 16 and config.num_key_value_heads == 2 and config.tie_word_embeddings


def test_older_top_level_rope_settings_are_read():
    config = model_config_from_hf(
        {**HF_LLAMA, "rope_theta": 1e6, "rope_scaling": {"type": "linear", "factor": 2.0}, "head_dim": 32}
    )
    assert config.rope_theta == 1e6
    assert config.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert config.head_dim == 32


def test_default_rope_type_means_no_scaling():
    config = model_config_from_hf({**HF_LLAMA, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}})
    assert config.rope_scaling is None and config.rope_theta == 1e4


def test_qwen2_always_has_qkv_bias():
    assert model_config_from_hf({**HF_LLAMA, "model_type": "qwen2"}).attention_bias
    assert not model_config_from_hf(HF_LLAMA).attention_bias


def test_unknown_model_type_names_the_file():
    with pytest.raises(ModelFileError, match=r"my/config.json: model_type 'gpt2' is not supported"):
        model_config_from_hf({**HF_LLAMA, "model_type": "gpt2"}, source="my/config.json")


def test_chat_config_round_trip(tmp_path, tiny_chat_config):
    config = tiny_chat_config()
    write_chat_config(config, tmp_path)
    assert read_chat_config(tmp_path) == config


def test_unknown_quantization_names_the_file(tmp_path, tiny_chat_config):
    write_chat_config(tiny_chat_config(), tmp_path)
    path = tmp_path / "mlc-chat-config.json"
    data = json.loads(path.read_text())
    data["quantization"] = "q3f16_1"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=r"mlc-chat-config.json: quantization 'q3f16_1' is not supported"):
        read_chat_config(tmp_path)


def test_unknown_model_type_in_chat_config_names_the_file(tmp_path, tiny_chat_config):
    write_chat_config(tiny_chat_config(), tmp_path)
    path = tmp_path / "mlc-chat-config.json"
    data = json.loads(path.read_text())
    data["model_type"] = "gemma2"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=r"mlc-chat-config.json: model_type 'gemma2'"):
        read_chat_config(tmp_path)


def test_template_given_by_name_in_older_configs(tmp_path, tiny_chat_config):
    write_chat_config(tiny_chat_config(), tmp_path)
    path = tmp_path / "mlc-chat-config.json"
    data = json.loads(path.read_text())
    data["conv_template"] = "llama-3"
    path.write_text(json.dumps(data))
    assert read_chat_config(tmp_path).conv_template.name == "llama-3"


def test_missing_chat_config_names_the_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"mlc-chat-config.json is missing"):
        read_chat_config(tmp_path)


def test_mlc_style_model_config_with_position_embedding_base(tmp_path, tiny_chat_config):
    write_chat_config(tiny_chat_config(), tmp_path)
    path = tmp_path / "mlc-chat-config.json"
    data = json.loads(path.read_text())
    del data["model_config"]["rope_theta"]
    data["model_config"]["position_embedding_base"] = 250000
    path.write_text(json.dumps(data))
    assert read_chat_config(tmp_path).model_config.rope_theta == 250000.0
