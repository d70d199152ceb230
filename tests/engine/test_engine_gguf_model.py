"""A model directory that runs a GGUF file as it is ("quantization": "gguf"): tiny random Llama
and Qwen2 models written as GGUF files with the `gguf` package (Q/K rows permuted as llama.cpp's
converter does, tensor types mixed per tensor as real files mix them), run through Tandem
against transformers reading the same GGUF (`from_pretrained(dir, gguf_file=...)`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
gguf = pytest.importorskip("gguf")

from engine.errors import ModelFileError  # noqa: E402
from engine.loader import open_engine  # noqa: E402
from engine.scoring import greedy_run  # noqa: E402
from engine_helpers import gguf_reference_logits, worst_difference  # noqa: E402
from gguf_fixtures import tiny_gguf  # noqa: E402, F401
from q4_k_writer import quantize_q4_k  # noqa: E402
from test_engine_int8_matmul import INT8_LOGIT_TOLERANCE  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog. Tandem keeps every conversation"
DECODE_STEPS = 16
Q = gguf.GGMLQuantizationType

# Per GGUF tensor role: the type it is written in. SmolLM2's file is q4_1 linears with a q8_0
# embedding tied to the head; the others mix every runtime kind, f16 (widened to f32) included.
MIXES = {
    "smollm-like": {"token_embd": Q.Q8_0, "output": Q.Q8_0, "default": Q.Q4_1},
    "mixed": {
        "token_embd": Q.Q4_1,
        "output": Q.Q8_0,
        "attn_q": Q.Q4_0,
        "attn_k": Q.Q4_0,
        "attn_v": Q.Q4_0,
        "attn_output": Q.Q8_0,
        "ffn_gate": Q.Q4_1,
        "ffn_up": Q.Q4_1,
        "ffn_down": Q.F16,
        "default": Q.Q4_0,
    },
    "q4_0-embedding": {"token_embd": Q.Q4_0, "output": Q.F32, "default": Q.Q8_0},
}

CASES = [
    pytest.param("llama", True, "smollm-like", id="llama-tied-smollm-like"),
    pytest.param("llama", False, "mixed", id="llama-untied-mixed"),
    pytest.param("qwen2", True, "q4_0-embedding", id="qwen2-tied-q4_0-embedding"),
]

_HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_name(hf_name: str) -> str:
    module, _, suffix = hf_name.rpartition(".")
    if module == "model.embed_tokens":
        return "token_embd." + suffix
    if module == "model.norm":
        return "output_norm." + suffix
    if module == "lm_head":
        return "output." + suffix
    _, _, layer, rest = module.split(".", 3)
    return f"blk.{layer}.{_HF_TO_GGUF[rest]}.{suffix}"


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter: each head's rotary halves into interleaved pairs."""
    rows, columns = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, columns).swapaxes(1, 2).reshape(rows, columns)


def write_gguf(hf_dir: Path, path: Path, mix: dict) -> None:
    """The checkpoint in hf_dir as a GGUF at path, tensor types from `mix` (vectors stay F32)."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    config = json.loads((hf_dir / "config.json").read_text())
    arch = config["model_type"]
    weights = load_file(str(hf_dir / "model.safetensors"))
    tokenizer = json.loads(Tokenizer.from_file(str(hf_dir / "tokenizer.json")).to_str())
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda item: item[1])
    special = {token["content"] for token in tokenizer["added_tokens"]}

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config.get("rope_theta") or config["rope_parameters"]["rope_theta"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token in special else 1 for token, _ in vocab])
    merges = tokenizer["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_eos_token_id(config["eos_token_id"])
    for hf_name, array in weights.items():
        name = _gguf_name(hf_name)
        array = np.ascontiguousarray(array, dtype=np.float32)
        role = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
        if arch == "llama" and role in ("attn_q", "attn_k"):
            heads = config["num_attention_heads"] if role == "attn_q" else config["num_key_value_heads"]
            array = _permute(array, heads)
        qtype = mix.get(role, mix["default"]) if array.ndim == 2 else Q.F32
        if qtype == Q.F32:
            writer.add_tensor(name, array)
        elif qtype == Q.F16:
            writer.add_tensor(name, array.astype(np.float16))
        elif qtype == Q.Q4_K:  # the gguf package cannot quantize K-quants
            writer.add_tensor(name, quantize_q4_k(array), raw_dtype=qtype)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_model_dir(mlc_dir: Path, gguf_path: Path, folder: Path, relative: bool = False) -> Path:
    """A Tandem model directory that runs gguf_path: the MLC directory's config and tokenizer,
    with "quantization": "gguf" and the file named under "tandem"."""
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((mlc_dir / "mlc-chat-config.json").read_text())
    config["quantization"] = "gguf"
    path = os.path.relpath(gguf_path, folder) if relative else str(gguf_path)
    config["tandem"] = {**config.get("tandem", {}), "gguf": {"path": path}}
    (folder / "mlc-chat-config.json").write_text(json.dumps(config))
    shutil.copy(mlc_dir / "tokenizer.json", folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="session")
def tiny_gguf_model(tmp_path_factory, tiny_hf_checkpoint, tiny_mlc_model):
    """build(model_type, tie, mix, seed=0) -> (gguf file, Tandem model directory running it)."""
    built: dict[tuple, tuple[Path, Path]] = {}

    def build(model_type: str, tie: bool, mix: str, seed: int = 0) -> tuple[Path, Path]:
        key = (model_type, tie, mix, seed)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"gguf-{model_type}-{mix}")
            hf_dir = tiny_hf_checkpoint(model_type=model_type, tie=tie, seed=seed)
            path = folder / "model.gguf"
            write_gguf(hf_dir, path, MIXES[mix])
            model_dir = gguf_model_dir(tiny_mlc_model("q0f32", model_type=model_type, tie=tie), path, folder / "tandem")
            built[key] = path, model_dir
        return built[key]

    return build


@pytest.fixture(autouse=True)
def float_matmul(monkeypatch):
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")
    monkeypatch.setenv("TANDEM_DEVICE", "cpu")


def fresh_prefill(engine, prompt: list[int]) -> np.ndarray:
    engine.session.reset()
    return engine.session.prefill(prompt)


@pytest.mark.parametrize(("model_type", "tie", "mix"), CASES)
def test_gguf_model_matches_transformers_reading_the_same_file(model_type, tie, mix, tiny_gguf_model):
    gguf_path, model_dir = tiny_gguf_model(model_type, tie, mix)
    engine = open_engine(model_dir, backend="tvm")
    assert engine.info.quantization == "gguf"
    prompt = engine.tokenizer.encode(PROMPT)

    tokens, ours = greedy_run(engine.session, prompt, DECODE_STEPS)

    expected = gguf_reference_logits(gguf_path, tokens)[len(prompt) - 1 :]
    worst = worst_difference(ours, expected)
    assert worst < 1e-3
    assert [int(np.argmax(row)) for row in expected[:-1]] == tokens[len(prompt) :]
    engine.close()


def test_each_tensor_runs_in_its_own_kind(tiny_gguf_model):
    from engine.config import read_chat_config
    from engine.tvm_backend.gguf_weights import open_gguf_weights

    _, model_dir = tiny_gguf_model("llama", False, "mixed")
    weights = open_gguf_weights(model_dir, read_chat_config(model_dir))
    assert weights.kinds["model.embed_tokens"] == "q4_1"
    assert weights.kinds["lm_head"] == "q8_0"
    assert weights.kinds["model.layers.1.self_attn.qkv_proj"] == "q4_0"
    assert weights.kinds["model.layers.0.self_attn.o_proj"] == "q8_0"
    assert weights.kinds["model.layers.0.mlp.gate_up_proj"] == "q4_1"
    assert weights.kinds["model.layers.0.mlp.down_proj"] == "q0"  # F16, widened exactly


def test_a_changed_gguf_file_is_noticed_by_the_weight_cache(tiny_gguf_model, tmp_path):
    gguf_path, model_dir = tiny_gguf_model("llama", True, "smollm-like")
    copy = tmp_path / "copy.gguf"
    shutil.copy(gguf_path, copy)
    local = gguf_model_dir(model_dir, copy, tmp_path / "model", relative=True)
    first = open_engine(local, backend="tvm")
    prompt = first.tokenizer.encode(PROMPT)
    before = fresh_prefill(first, prompt)
    first.close()
    again = open_engine(local, backend="tvm")
    assert again.weights_cache_hit
    np.testing.assert_array_equal(fresh_prefill(again, prompt), before)
    again.close()

    # Other weights of the same shapes and types under the same name: not served from the cache.
    shutil.copy(tiny_gguf_model("llama", True, "smollm-like", seed=1)[0], copy)
    changed = open_engine(local, backend="tvm")
    assert not changed.weights_cache_hit
    assert np.abs(fresh_prefill(changed, prompt) - before).max() > 1e-2
    changed.close()


def test_a_missing_gguf_file_is_named(tiny_gguf_model, tmp_path):
    gguf_path, model_dir = tiny_gguf_model("llama", True, "smollm-like")
    local = gguf_model_dir(model_dir, tmp_path / "gone.gguf", tmp_path / "model")
    with pytest.raises(ModelFileError, match="gone.gguf is missing.*tandem models import"):
        open_engine(local, backend="tvm")


def test_a_gguf_config_without_a_path_is_named(tiny_gguf_model, tmp_path):
    _, model_dir = tiny_gguf_model("llama", True, "smollm-like")
    config = json.loads((model_dir / "mlc-chat-config.json").read_text())
    del config["tandem"]["gguf"]
    (tmp_path / "mlc-chat-config.json").write_text(json.dumps(config))
    from engine.config import read_chat_config

    with pytest.raises(ModelFileError, match='"gguf".*tandem models import'):
        read_chat_config(tmp_path)


def test_a_gguf_model_compiles_for_cuda(tiny_gguf_model, tmp_path):
    """Every GGUF kind in one model, through the GPU forms dlight schedules; nvcc then turns the
    CUDA source into a cubin for sm_80 (no GPU here: built, not run)."""
    import re
    import subprocess

    from test_engine_gpu import CUDA_BUILD, _cuda_build_skip_reason, _device_module

    reason = _cuda_build_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    from engine.config import read_chat_config
    from engine.tvm_backend.compiler import build_executable
    from engine.tvm_backend.gguf_weights import open_gguf_weights
    from engine.tvm_backend.target import gpu_build_target

    _, model_dir = tiny_gguf_model("llama", False, "mixed")
    config = read_chat_config(model_dir)
    kinds = open_gguf_weights(model_dir, config).kinds
    executable, params = build_executable(config.model_config, kinds, gpu_build_target(CUDA_BUILD))
    dtypes = {name: dtype for name, _, dtype in params}
    assert dtypes["model.layers.0.self_attn.o_proj.q_weight"] == "int8"
    assert dtypes["model.layers.0.mlp.gate_up_proj.q_min"] == "float16"
    assert dtypes["model.embed_tokens.q_min"] == "float16"

    source = _device_module(executable.mod, "cuda").inspect_source()
    names = set(re.findall(r"__global__ void __launch_bounds__\(\d+\) (\w+)_kernel\(", source))
    for kind in ("q4_0", "q4_1", "q8_0", "q0"):
        assert any(re.fullmatch(rf"{kind}_decode_\d+x\d+", name) for name in names), kind
        assert any(re.fullmatch(rf"{kind}_prefill_\d+x\d+", name) for name in names), kind
    (tmp_path / "model.cu").write_text(source)
    compiled = subprocess.run(
        ["nvcc", "-cubin", "-arch=sm_80", "-o", str(tmp_path / "model.cubin"), str(tmp_path / "model.cu")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stderr[-2000:]


def test_the_mlc_backend_declines_a_gguf_model_and_auto_takes_tvm(tiny_gguf_model):
    from engine.errors import BackendUnavailable

    _, model_dir = tiny_gguf_model("llama", True, "smollm-like")
    with pytest.raises(BackendUnavailable, match="GGUF file.*tvm"):
        open_engine(model_dir, backend="mlc")
    engine = open_engine(model_dir, backend="auto")
    assert engine.info.backend == "tvm"
    engine.close()


def test_on_a_vnni_cpu_gguf_4bit_layers_take_the_int8_layout(tiny_gguf_model):
    """Built (not run: this machine may lack AVX-512) for an AVX512-VNNI CPU with int8 matmuls:
    q4_0 and q4_1 layers take the int8 kernels' VNNI layout (q4_1 with its mins, q4_0 without:
    its min is -8 * scale), q8_0 keeps the float kernels' tiled layout."""
    from engine.config import read_chat_config
    from engine.tvm_backend.compiler import build_executable
    from engine.tvm_backend.gguf_weights import open_gguf_weights
    from engine.tvm_backend.target import HostTarget

    _, model_dir = tiny_gguf_model("llama", False, "mixed")
    config = read_chat_config(model_dir)
    kinds = open_gguf_weights(model_dir, config).kinds
    spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "icelake-server"}
    target = HostTarget(tvm.target.Target(spec), tvm.cpu(), "cpu (icelake-server, build only)", "cpu", "int8")
    _, params = build_executable(config.model_config, kinds, target)
    shapes = {name: (shape, dtype) for name, shape, dtype in params}
    assert shapes["model.layers.0.self_attn.qkv_proj.q_weight"] == ((4, 2, 4, 2, 64), "uint8")  # q4_0, VNNI
    assert "model.layers.0.self_attn.qkv_proj.q_min" not in shapes
    assert shapes["model.layers.0.mlp.gate_up_proj.q_weight"][1] == "uint8"  # q4_1, VNNI
    assert shapes["model.layers.0.mlp.gate_up_proj.q_min"] == ((8, 2, 32), "float16")
    assert shapes["model.layers.0.self_attn.o_proj.q_weight"] == ((2, 64, 32), "int8")  # q8_0


def test_an_imported_gguf_with_k_quants_answers(tiny_gguf, tmp_path):
    """The user's path: engine.gguf imports a file whose Q6_K (and a Q4_K fused with Q4_1 parts)
    it re-quantizes to q8_0 (beside native q4_1 and q4_0), and the engine answers from it, each
    tensor in its own kind."""
    from engine.api import FinishEvent, GenerationRequest, TokenEvent
    from engine.gguf.importer import import_gguf

    types = {"token_embd": "Q6_K", "attn_q": "Q4_K", "attn_k": "Q4_1", "attn_v": "Q4_1", "ffn_down": "Q4_0"}
    import_gguf(tiny_gguf(types=types).path, tmp_path / "model")
    engine = open_engine(tmp_path / "model", backend="tvm")
    request = GenerationRequest(messages=[{"role": "user", "content": "Hello there"}], max_tokens=4, seed=1)
    events = list(engine.generate(request))
    assert any(isinstance(event, TokenEvent) for event in events)
    assert isinstance(events[-1], FinishEvent) and events[-1].usage.completion_tokens >= 1
    engine.close()


@pytest.fixture(scope="session")
def q4_k_gguf_model(tmp_path_factory, tiny_hf_checkpoint, tiny_mlc_model):
    """(gguf file, Tandem model directory) of a tiny llama whose matrices are all Q4_K (hidden
    256: K-quant rows hold whole super-blocks), written by the numpy Q4_K writer."""
    shape = {"hidden_size": 256, "intermediate_size": 512}
    folder = tmp_path_factory.mktemp("gguf-q4_k")
    hf_dir = tiny_hf_checkpoint(model_type="llama", tie=True, **shape)
    path = folder / "model.gguf"
    write_gguf(hf_dir, path, {"default": Q.Q4_K})
    mlc_dir = tiny_mlc_model("q0f32", model_type="llama", tie=True, **shape)
    return path, gguf_model_dir(mlc_dir, path, folder / "tandem")


@pytest.mark.parametrize("matmul", ["float", "int8"])
def test_a_q4_k_model_matches_transformers_reading_the_same_file(q4_k_gguf_model, monkeypatch, matmul):
    """Q4_K runs as its own kind (no re-quantizing) on the float and the int8 kernels."""
    from engine.config import read_chat_config
    from engine.tvm_backend.gguf_weights import open_gguf_weights
    from engine.tvm_backend.int8_kernels import supports_int8
    from engine.tvm_backend.target import host_target

    if matmul == "int8" and not supports_int8(host_target("cpu").target):
        pytest.skip("this CPU has none of the int8 kernels' instruction sets")
    monkeypatch.setenv("TANDEM_CPU_MATMUL", matmul)
    gguf_path, model_dir = q4_k_gguf_model
    assert set(open_gguf_weights(model_dir, read_chat_config(model_dir)).kinds.values()) == {"q4_k"}
    engine = open_engine(model_dir, backend="tvm")
    assert ("int8 matmul" in engine.info.device) == (matmul == "int8")
    prompt = engine.tokenizer.encode(PROMPT)

    tokens, ours = greedy_run(engine.session, prompt, DECODE_STEPS)

    expected = gguf_reference_logits(gguf_path, tokens)[len(prompt) - 1 :]
    worst = worst_difference(ours, expected)
    print(f"q4_k {matmul}: worst logit difference {worst:.2e}")
    assert worst < (1e-3 if matmul == "float" else INT8_LOGIT_TOLERANCE)
    assert [int(np.argmax(row)) for row in expected[:-1]] == tokens[len(prompt) :]
    engine.close()
