"""The int8 CPU matmuls on the real model: SmolLM2-135M-Instruct's GGUF, read by transformers,
saved as a checkpoint and converted to q4f16_1 (the int8 kernels serve MLC's 4-bit kinds), run
with TANDEM_CPU_MATMUL=float and =int8 on the same directory (both with the default float16 KV
cache). bench/int8_accuracy.py measures the same figures with a float32 cache; the README quotes them (AVX2: perplexity ratio 1.00017, logits moved by up to 1.45,
greedy paths equal through the end of the turn on all three prompts)."""

from __future__ import annotations

import json

import pytest

tvm = pytest.importorskip("tvm")
pytest.importorskip("gguf")
pytest.importorskip("transformers")

from engine.scoring import forced_logits, greedy_run, passage_logits, perplexity  # noqa: E402
from engine_helpers import PASSAGE, SMOLLM2_PROMPT_IDS, SMOLLM2_PROMPTS, worst_difference  # noqa: E402
from gguf_fixtures import smollm2_path, smollm2_reference_model  # noqa: E402, F401

PERPLEXITY_RATIO_TOLERANCE = 0.005
"""int8 may raise the passage's perplexity by 0.5% at most (measured: 0.017%)."""
INT8_LOGIT_TOLERANCE = 3.0
"""Largest |logit| difference over a prefill and 16 steps (measured 1.45 with logits up to 37.7;
the tiny random models' 2e-2 does not carry over to a real model's sharper distributions)."""
END_OF_TURN = 2  # <|im_end|>


@pytest.fixture(scope="module")
def engines(tmp_path_factory, smollm2_path, smollm2_reference_model):
    """{"float": engine, "int8": engine} on one q4f16_1 conversion of the real model."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from engine.convert import convert_hf_checkpoint
    from engine.loader import open_engine
    from engine.tvm_backend.int8_kernels import supports_int8
    from engine.tvm_backend.target import host_target

    if not supports_int8(host_target("cpu").target):
        pytest.skip("this CPU has none of the int8 kernels' instruction sets")
    root = tmp_path_factory.mktemp("smollm2-int8")
    hf_dir, model_dir = root / "hf", root / "q4f16_1"
    hf_dir.mkdir()
    model = smollm2_reference_model
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
    save_file(state, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    config.pop("quantization_config", None)  # plain float32 weights now
    (hf_dir / "config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name).save_pretrained(hf_dir)
    convert_hf_checkpoint(hf_dir, model_dir, "q4f16_1")

    opened = {}
    for mode in ("float", "int8"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TANDEM_CPU_MATMUL", mode)  # read when the engine opens
            patch.setenv("TANDEM_DEVICE", "cpu")
            opened[mode] = open_engine(model_dir, backend="tvm")
    yield opened
    for engine in opened.values():
        engine.close()


def test_the_int8_engine_runs_the_int8_kernels(engines):
    assert "int8 matmul" in engines["int8"].info.device
    assert "int8 matmul" not in engines["float"].info.device
    assert engines["int8"].info.quantization == "q4f16_1"


def test_int8_keeps_the_passage_perplexity_within_half_a_percent(engines):
    ids = engines["float"].tokenizer.encode(PASSAGE.read_text(encoding="utf-8"))
    ppl_float = perplexity(ids, passage_logits(engines["float"].session, ids))
    ppl_int8 = perplexity(ids, passage_logits(engines["int8"].session, ids))
    print(f"perplexity: float {ppl_float:.4f}, int8 {ppl_int8:.4f}")
    assert ppl_int8 != ppl_float  # the int8 path really computed something else
    assert abs(ppl_int8 / ppl_float - 1) <= PERPLEXITY_RATIO_TOLERANCE


def test_int8_logits_along_the_float_greedy_path_stay_within_tolerance(engines):
    prompt = engines["float"].tokenizer.encode(SMOLLM2_PROMPTS[0])
    tokens, ours = greedy_run(engines["float"].session, prompt, 16)
    theirs = forced_logits(engines["int8"].session, prompt, tokens[len(prompt) : -1])
    worst = worst_difference(ours, theirs)
    print(f"largest logit difference float vs int8: {worst:.3f}")
    assert 0 < worst < INT8_LOGIT_TOLERANCE


@pytest.mark.parametrize("prompt", SMOLLM2_PROMPTS, ids=SMOLLM2_PROMPT_IDS)
def test_32_greedy_tokens_agree_through_the_end_of_the_turn(engines, prompt):
    ids = engines["float"].tokenizer.encode(prompt)
    float_tokens = greedy_run(engines["float"].session, ids, 32)[0][len(ids) :]
    int8_tokens = greedy_run(engines["int8"].session, ids, 32)[0][len(ids) :]
    # Past <|im_end|> the model rambles on low-margin tokens; what a user sees ends there.
    end = float_tokens.index(END_OF_TURN) + 1 if END_OF_TURN in float_tokens else len(float_tokens)
    assert int8_tokens[:end] == float_tokens[:end]


@pytest.fixture(scope="module")
def gguf_int8(tmp_path_factory, smollm2_path, smollm2_reference_model):
    """(transformers' model for the file, Tandem's int8 engine on the file as it is: its q4_1
    linears on the int8 kernels, no re-quantizing)."""
    from engine.gguf.importer import import_gguf
    from engine.loader import open_engine
    from engine.tvm_backend.int8_kernels import supports_int8
    from engine.tvm_backend.target import host_target

    if not supports_int8(host_target("cpu").target):
        pytest.skip("this CPU has none of the int8 kernels' instruction sets")
    model_dir = tmp_path_factory.mktemp("smollm2-gguf-int8") / "model"
    import_gguf(smollm2_path, model_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TANDEM_CPU_MATMUL", "int8")
        patch.setenv("TANDEM_DEVICE", "cpu")
        engine = open_engine(model_dir, backend="tvm")
    yield smollm2_reference_model, engine
    engine.close()


def test_the_gguf_q4_1_layers_run_on_the_int8_kernels(gguf_int8):
    from app.paths import cache_dir
    from engine.tvm_backend.compiler import compiled_model
    from engine.tvm_backend.gguf_weights import open_gguf_weights
    from engine.tvm_backend.target import cpu_target

    _, engine = gguf_int8
    assert "int8 matmul" in engine.info.device
    config = engine.chat_config
    kinds = open_gguf_weights(engine.model_dir, config).kinds
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TANDEM_CPU_MATMUL", "int8")
        target = cpu_target()
    compiled = compiled_model(config.model_config, kinds, target, cache_dir())
    assert compiled.compile_s == 0.0  # the engine's own library, from the cache
    params = {name: dtype for name, _, dtype in compiled.params}
    assert params["model.layers.0.mlp.gate_up_proj.q_weight"] == "uint8"  # the VNNI layout
    assert params["model.layers.0.mlp.gate_up_proj.q_min"] == "float16"  # q4_1's own mins


def test_gguf_int8_logits_match_transformers_within_the_int8_tolerance(gguf_int8):
    from engine_helpers import model_logits

    model, engine = gguf_int8
    prompt = engine.tokenizer.encode(SMOLLM2_PROMPTS[0])
    tokens, ours = greedy_run(engine.session, prompt, 16)
    expected = model_logits(model, tokens)[len(prompt) - 1 :]
    worst = worst_difference(ours, expected)
    print(f"largest logit difference gguf int8 vs transformers: {worst:.3f}")
    assert 0 < worst < INT8_LOGIT_TOLERANCE


def test_gguf_int8_keeps_the_passage_perplexity_within_half_a_percent(gguf_int8):
    from engine_helpers import model_logits

    model, engine = gguf_int8
    ids = engine.tokenizer.encode(PASSAGE.read_text(encoding="utf-8"))
    ours = perplexity(ids, passage_logits(engine.session, ids))
    theirs = perplexity(ids, model_logits(model, ids)[:-1])
    print(f"perplexity: tandem gguf int8 {ours:.4f}, transformers {theirs:.4f}")
    assert abs(ours / theirs - 1) <= PERPLEXITY_RATIO_TOLERANCE
