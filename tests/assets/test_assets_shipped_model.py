"""The shipped tandem-nano directory: complete, small, and carrying its refusal and skills."""

from __future__ import annotations

import json

import pytest

from assets import embedded_model_dir
from assets.training.facts import REFUSAL
from engine.artifact import load_params
from engine.config import read_chat_config

MODEL_DIR = embedded_model_dir()
pytestmark = pytest.mark.skipif(not MODEL_DIR.is_dir(), reason=f"no shipped model at {MODEL_DIR}")


def test_the_model_is_at_most_20_mb():
    size = sum(p.stat().st_size for p in MODEL_DIR.iterdir() if p.is_file())
    assert size <= 20 * 1024 * 1024


def test_config_carries_the_refusal_and_declared_skills():
    config = read_chat_config(MODEL_DIR)
    assert config.tandem["refusal"] == REFUSAL
    assert set(config.tandem["skills"]) == {"tandem_help", "small_talk"}


def test_it_is_a_q4_llama_with_a_chatml_template():
    config = read_chat_config(MODEL_DIR)
    assert config.model_type == "llama"
    assert config.quantization in ("q4f32_1", "q4f16_1")
    assert config.conv_template.roles["user"] == "<|im_start|>user"
    raw = json.loads((MODEL_DIR / "mlc-chat-config.json").read_text(encoding="utf-8"))
    assert raw["conv_template"]["stop_str"] == ["<|im_end|>"]


def test_weights_are_complete_and_intact():
    config = read_chat_config(MODEL_DIR)
    params = load_params(MODEL_DIR, config)  # checks md5 sums, names, shapes and dtypes
    assert "model.embed_tokens.q_weight" in params
    assert "lm_head.q_weight" not in params  # tied embeddings


def test_the_model_card_states_the_refusal_and_how_to_regenerate():
    card = (MODEL_DIR / "README.md").read_text(encoding="utf-8")
    assert REFUSAL in card
    assert "python -m assets.training.train" in card


def test_its_jinja_template_renders_what_its_conv_template_did():
    from engine.chat_template import read_chat_template

    config = read_chat_config(MODEL_DIR)
    jinja = read_chat_template(MODEL_DIR)
    assert jinja is not None
    for messages in (
        [{"role": "user", "content": "What is Tandem?"}],
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How do I search?"}],
    ):  # fmt: skip
        assert jinja.render(messages) == config.conv_template.render(messages)
    assert "You are tandem-nano" in jinja.render([{"role": "user", "content": "Hi"}])


def test_it_samples_as_its_calibration_was_fitted():
    from engine.config import read_generation_defaults

    defaults = read_generation_defaults(MODEL_DIR)
    assert (defaults.temperature, defaults.top_p, defaults.top_k, defaults.min_p) == (0.7, 0.95, 0, 0.0)
    assert defaults.repetition_penalty == 1.0
