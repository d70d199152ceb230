"""A model's own generation settings: read from mlc-chat-config.json, generation_config.json and
Ollama params, carried by the converter, and applied by the engine unless the request overrides."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.api import FinishEvent, GenerationRequest
from engine.config import read_generation_defaults, settings_from_ollama_params
from engine.errors import ModelFileError
from engine.sampling import SamplingParams

MESSAGES = ({"role": "user", "content": "Tell me about the quick brown fox."},)


def _model_dir(tmp_path: Path, chat: dict, generation: dict | None = None) -> Path:
    (tmp_path / "mlc-chat-config.json").write_text(json.dumps(chat))
    if generation is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    return tmp_path


def test_mlc_chat_config_gives_every_setting(tmp_path):
    chat = {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}
    assert read_generation_defaults(_model_dir(tmp_path, chat)) == SamplingParams(**chat)


def test_generation_config_fills_what_mlc_chat_config_leaves_out(tmp_path):
    generation = {"do_sample": True, "temperature": 0.3, "top_k": 40, "min_p": 0.1, "repetition_penalty": 1.05}
    defaults = read_generation_defaults(_model_dir(tmp_path, {"temperature": 0.6}, generation))
    assert defaults == SamplingParams(temperature=0.6, top_k=40, min_p=0.1, repetition_penalty=1.05)


def test_do_sample_false_means_greedy(tmp_path):
    defaults = read_generation_defaults(_model_dir(tmp_path, {}, {"do_sample": False, "temperature": 0.9}))
    assert defaults.temperature == 0.0


def test_nothing_said_is_neutral_and_minus_one_top_k_is_no_limit(tmp_path):
    assert read_generation_defaults(_model_dir(tmp_path, {"top_k": -1})) == SamplingParams()


@pytest.mark.parametrize("bad", [{"top_p": 0}, {"temperature": "hot"}, {"min_p": 1.5}, {"top_k": 2.5}])
def test_a_bad_setting_names_the_file_and_the_key(tmp_path, bad):
    with pytest.raises(ModelFileError, match=rf"mlc-chat-config.json: .*{next(iter(bad))}"):
        read_generation_defaults(_model_dir(tmp_path, bad))


def test_ollama_params_map_to_tandems_names():
    params = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repeat_penalty": 1.1,
              "stop": ["<|im_end|>"], "num_ctx": 4096}  # fmt: skip
    assert settings_from_ollama_params(params) == {
        "temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.1,
    }  # fmt: skip
    assert settings_from_ollama_params({"top_k": -1}) == {"top_k": 0}
    with pytest.raises(ModelFileError, match="Ollama params: repeat_penalty is -1, but .*PARAMETER"):
        settings_from_ollama_params({"repeat_penalty": -1})


def test_ollama_params_written_by_an_importer_are_the_models_defaults(tmp_path):
    chat = settings_from_ollama_params({"temperature": 0.5, "top_k": 30, "repeat_penalty": 1.2})
    defaults = read_generation_defaults(_model_dir(tmp_path, chat))
    assert (defaults.temperature, defaults.top_k, defaults.repetition_penalty) == (0.5, 30, 1.2)


def test_the_converter_carries_every_setting_from_generation_config(tmp_path, tiny_hf_checkpoint):
    from engine.convert import convert_hf_checkpoint

    hf_dir = tmp_path / "hf"
    shutil.copytree(tiny_hf_checkpoint(), hf_dir)
    generation = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.02,
                  "repetition_penalty": 1.05}  # fmt: skip
    (hf_dir / "generation_config.json").write_text(json.dumps(generation))
    out = convert_hf_checkpoint(hf_dir, tmp_path / "out", "q0f32").out_dir
    expected = SamplingParams(**{k: v for k, v in generation.items() if k != "do_sample"})
    assert read_generation_defaults(out) == expected
    raw = json.loads((out / "mlc-chat-config.json").read_text())
    assert (raw["top_k"], raw["min_p"]) == (20, 0.02)


# -- the engine applies them ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def greedy_by_default(tiny_mlc_model, tmp_path_factory):
    """A tiny model whose own settings say greedy with no repetition penalty."""
    from engine.loader import open_engine

    model_dir = tmp_path_factory.mktemp("greedy") / "model"
    shutil.copytree(tiny_mlc_model("q4f32_1", model_type="llama", tie=True), model_dir)
    config_path = model_dir / "mlc-chat-config.json"
    config = json.loads(config_path.read_text())
    config.update(temperature=0.0, top_p=1.0, repetition_penalty=1.0)
    config_path.write_text(json.dumps(config))
    opened = open_engine(model_dir, backend="tvm")
    yield opened
    opened.close()


def _ids(engine, **request) -> list[int]:
    events = list(engine.generate(GenerationRequest(messages=MESSAGES, max_tokens=24, **request)))
    assert isinstance(events[-1], FinishEvent)
    return [event.token_id for event in events[:-1]]


def test_the_engine_samples_with_the_models_settings_unless_the_request_overrides(greedy_by_default):
    assert greedy_by_default.generation_defaults.temperature == 0.0
    by_default = _ids(greedy_by_default, seed=1)
    assert by_default == _ids(greedy_by_default, seed=2)  # greedy: the seed changes nothing
    assert by_default == _ids(greedy_by_default, temperature=0.0)
    sampled = [_ids(greedy_by_default, temperature=2.0, seed=seed) for seed in (1, 2)]
    assert sampled[0] != sampled[1]  # the request's temperature won


def test_the_repetition_penalty_changes_a_looping_greedy_reply(greedy_by_default):
    plain = _ids(greedy_by_default)
    assert len(set(plain)) < len(plain)  # the random tiny model repeats itself
    penalised = _ids(greedy_by_default, repetition_penalty=2.0)
    assert penalised != plain
    assert len(set(penalised)) > len(set(plain))


def test_the_engine_prompts_with_the_models_own_jinja_template(greedy_by_default):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(greedy_by_default.model_dir))
    messages = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    expected = reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert greedy_by_default.prompt_ids(messages) == list(expected)


def test_a_bad_setting_in_the_chat_config_is_named_when_it_is_read(tiny_mlc_model, tmp_path):
    from engine.config import read_chat_config

    folder = tmp_path / "model"
    shutil.copytree(tiny_mlc_model("q0f32"), folder)
    config = json.loads((folder / "mlc-chat-config.json").read_text())
    config["top_k"] = "forty"
    (folder / "mlc-chat-config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="mlc-chat-config.json: top_k must be a number"):
        read_chat_config(folder)


def test_a_ggufs_recommended_sampling_maps_to_tandems_names():
    from engine.config import settings_from_gguf_metadata

    metadata = {"general.architecture": "llama", "general.sampling.temp": 0.6, "general.sampling.top_k": 20,
                "general.sampling.top_p": 0.95, "general.sampling.min_p": 0.0, "general.sampling.penalty_repeat": 1.05}  # fmt: skip
    assert settings_from_gguf_metadata(metadata) == {
        "temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.0, "repetition_penalty": 1.05,
    }  # fmt: skip
    assert settings_from_gguf_metadata({"general.architecture": "llama"}) == {}
    with pytest.raises(ModelFileError, match="model.gguf: general.sampling.top_p is 0, but top_p must be above 0"):
        settings_from_gguf_metadata({"general.sampling.top_p": 0}, source="model.gguf")
