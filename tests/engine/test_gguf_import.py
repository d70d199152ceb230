"""engine.gguf.importer: a GGUF becomes a complete Tandem model directory (config, tokenizer, the
file referenced or copied), generation defaults and the route land in mlc-chat-config.json, and
a failure leaves nothing half-written."""

from __future__ import annotations

import hashlib
import json

import pytest
from gguf_fixtures import TINY_CHATML, smollm2_path, tiny_gguf  # noqa: F401

from engine.config import model_config_from_hf
from engine.errors import ModelFileError
from engine.gguf import read_model_config
from engine.gguf.importer import gguf_path_of, import_gguf
from engine.tokenizer import Tokenizer


def chat_config(model_dir):
    return json.loads((model_dir / "mlc-chat-config.json").read_text())


def test_the_digest_is_computed_unless_the_caller_knows_it(tiny_gguf, tmp_path):
    tiny = tiny_gguf(types="Q4_0")
    computed = import_gguf(tiny.path, tmp_path / "computed").chat_config["tandem"]["gguf"]["sha256"]
    assert computed == hashlib.sha256(tiny.path.read_bytes()).hexdigest()
    given = import_gguf(tiny.path, tmp_path / "given", sha256="AB" * 32).chat_config["tandem"]["gguf"]["sha256"]
    assert given == "ab" * 32  # taken as given (an Ollama blob's name, a checked Hub download)


def test_import_writes_a_complete_directory_that_references_the_file(tiny_gguf, tmp_path):
    tiny = tiny_gguf(types="Q4_0", context=16384)
    stages = []
    result = import_gguf(
        tiny.path,
        tmp_path / "model",
        generation_defaults={"temperature": 0.3, "top_p": 0.8, "top_k": 20, "min_p": 0.05, "repeat_penalty": 1.15},
        system_prompt="You are terse.",
        on_progress=lambda stage, fraction: stages.append((stage, fraction)),
    )
    model_dir = tmp_path / "model"
    written = sorted(p.name for p in model_dir.iterdir())
    assert written == ["mlc-chat-config.json", "tokenizer.json", "tokenizer_config.json"]
    assert not list(tmp_path.glob(".*partial"))
    assert stages[0] == ("reading", 0.0) and stages[-1] == ("done", 1.0)
    data = chat_config(model_dir)
    assert data["quantization"] == "gguf" and data["model_type"] == "llama"
    config = read_model_config(tiny.path)
    assert model_config_from_hf({**data["model_config"], "model_type": "llama"}) == config
    assert data["context_window_size"] == 8192  # the model's 16384, capped like converted models
    tokens = Tokenizer(model_dir / "tokenizer.json")
    assert data["bos_token_id"] == tokens.token_to_id("<|im_start|>")
    assert data["eos_token_id"] == [tokens.token_to_id("<|im_end|>")]
    assert (data["temperature"], data["top_p"], data["top_k"], data["min_p"], data["repetition_penalty"]) == (
        0.3, 0.8, 20, 0.05, 1.15,
    )  # fmt: skip
    gguf = data["tandem"]["gguf"]
    assert gguf["path"] == str(tiny.path.resolve()) and gguf_path_of(model_dir, data) == tiny.path.resolve()
    assert gguf["tensor_types"] == {"Q4_0": 15, "F32": 5}
    assert gguf["route"] == result.route and result.route.startswith("as stored: 15 Q4_0, 5 F32")
    assert data["tandem"]["system_prompt"] == "You are terse."
    assert data["conv_template"]["system_message"] == "You are terse."
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == TINY_CHATML
    assert (tokenizer_config["bos_token"], tokenizer_config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert tokens.decode(tokens.encode("Tandem keeps every conversation")) == "Tandem keeps every conversation"
    assert result.file_bytes == tiny.path.stat().st_size and result.weight_bytes == result.runtime_bytes
    assert result.tensor_types == gguf["tensor_types"] and not result.copied


def test_reference_false_copies_the_file_in(tiny_gguf, tmp_path):
    tiny = tiny_gguf(types="Q8_0")
    result = import_gguf(tiny.path, tmp_path / "model", reference=False)
    copy = tmp_path / "model" / "model.gguf"
    assert copy.read_bytes() == tiny.path.read_bytes() and result.copied and result.gguf_path == copy
    data = chat_config(tmp_path / "model")
    assert data["tandem"]["gguf"]["path"] == "model.gguf"  # relative: survives renaming the folder
    (tmp_path / "model").rename(tmp_path / "moved")
    assert gguf_path_of(tmp_path / "moved", data) == tmp_path / "moved" / "model.gguf"


def test_k_quants_report_their_routes_and_their_cost(tiny_gguf, tmp_path):
    """Q4_K runs natively (its own 4-bit kind); Q6_K, and a fused tensor whose parts mix types,
    are re-quantized to q8_0: the route line counts both and what they cost in memory."""
    types = {"attn_q": "Q4_K", "attn_k": "Q4_K", "attn_v": "Q6_K", "ffn_gate": "Q4_K", "ffn_up": "Q4_K",
             "ffn_down": "Q6_K", "attn_output": "Q4_K", "token_embd": "Q6_K"}  # fmt: skip
    result = import_gguf(tiny_gguf(types=types).path, tmp_path / "model")
    # Q4_K and Q6_K run natively where a tensor is in one of them alone; the fused qkv mixes them.
    assert "as stored: 6 Q4_K, 5 F32, 3 Q6_K" in result.route  # gate/up and attn_output; ffn_down and the embedding
    assert "re-quantized to q8_0: 4 Q4_K, 2 Q6_K" in result.route  # q/k fused with a Q6_K v
    assert result.runtime_bytes > result.weight_bytes and "in memory (+" in result.route
    routes = chat_config(tmp_path / "model")["tandem"]["gguf"]["routes"]
    assert routes == {"requantized": 2, "native": 12}
    qkv = next(r for r in result.tensors if r.name == "model.layers.0.self_attn.qkv_proj.weight")
    assert (qkv.route, qkv.format, qkv.source_types) == ("requantized", "q8_0", ("Q4_K", "Q4_K", "Q6_K"))
    gate_up = next(r for r in result.tensors if r.name == "model.layers.0.mlp.gate_up_proj.weight")
    assert (gate_up.route, gate_up.format, gate_up.source_types) == ("native", "q4_k", ("Q4_K", "Q4_K"))


def test_an_empty_existing_folder_is_filled_and_a_full_one_refused(tiny_gguf, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    import_gguf(tiny_gguf().path, empty)
    assert (empty / "mlc-chat-config.json").is_file()
    with pytest.raises(ModelFileError, match="already exists and is not empty"):
        import_gguf(tiny_gguf().path, empty)


def test_a_bad_file_leaves_nothing(tiny_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf().path.read_bytes()[:-500])
    with pytest.raises(ModelFileError, match="truncated"):
        import_gguf(cut, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf"]


def test_a_failure_while_writing_keeps_the_old_model_and_leaves_no_staging(tiny_gguf, tmp_path):
    model_dir = tmp_path / "model"
    import_gguf(tiny_gguf(types="Q8_0").path, model_dir)
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}

    def interrupt(stage: str, fraction: float) -> None:
        if stage == "copying":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_gguf(tiny_gguf(types="Q4_1").path, model_dir, reference=False, overwrite=True, on_progress=interrupt)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_unknown_generation_default_is_refused(tiny_gguf, tmp_path):
    with pytest.raises(ModelFileError, match="'mirostat' is not a setting"):
        import_gguf(tiny_gguf().path, tmp_path / "model", generation_defaults={"mirostat": 2})
    assert not (tmp_path / "model").exists()


def test_the_real_smollm2_file_imports_natively(smollm2_path, tmp_path):
    result = import_gguf(smollm2_path, tmp_path / "smollm2")
    assert result.route == "as stored: 210 Q4_1, 61 F32, 1 Q8_0 (96.6 MB)"
    assert result.tensor_types == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    data = chat_config(tmp_path / "smollm2")
    assert (data["context_window_size"], data["bos_token_id"], data["eos_token_id"]) == (8192, 1, [2])
    assert data["conv_template"]["name"] == "chatml" and data["conv_template"]["stop_token_ids"] == [2]
    tokenizer_config = json.loads((tmp_path / "smollm2" / "tokenizer_config.json").read_text())
    assert "You are a helpful AI assistant named SmolLM" in tokenizer_config["chat_template"]
    assert (tokenizer_config["bos_token"], tokenizer_config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert tokenizer_config["add_bos_token"] is False


def test_qwen2_imports_with_its_template_and_the_files_sampling_settings(tiny_gguf, tmp_path):
    sampling = (("general.sampling.temp", 0.7), ("general.sampling.top_k", 40), ("general.sampling.top_p", 0.9))
    tiny = tiny_gguf(arch="qwen2", types="Q4_1", metadata=sampling)
    import_gguf(tiny.path, tmp_path / "model", generation_defaults={"top_p": 0.5})
    data = chat_config(tmp_path / "model")
    assert data["model_type"] == "qwen2" and data["model_config"]["attention_bias"] is True
    assert data["conv_template"]["name"] == "qwen2"
    # The file's own settings, with the ones given (Ollama's params) on top.
    assert data["temperature"] == pytest.approx(0.7) and data["top_k"] == 40 and data["top_p"] == 0.5


def test_the_directory_reads_back_as_a_chat_config_where_gguf_is_accepted(tiny_gguf, tmp_path):
    from engine.config import read_chat_config

    import_gguf(tiny_gguf().path, tmp_path / "model")
    try:
        config = read_chat_config(tmp_path / "model")
    except ModelFileError as error:
        if "'gguf' is not supported" in str(error):
            pytest.skip("this engine.config predates the kernels branch, which accepts quantization gguf")
        raise
    assert config.quantization == "gguf" and config.model_config == read_model_config(tiny_gguf().path)
    assert config.tandem["gguf"]["path"] == str(tiny_gguf().path.resolve())


def test_a_file_without_sampling_settings_samples_as_llama_cpp_does(tiny_gguf, tmp_path):
    import_gguf(tiny_gguf().path, tmp_path / "model")
    data = chat_config(tmp_path / "model")
    settings = {name: data[name] for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")}
    assert settings == {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repetition_penalty": 1.0}
