"""The real model, run from its GGUF as it is (no re-quantizing): SmolLM2-135M-Instruct's Q4_1
file (q4_1 linears, a q8_0 embedding tied to the head) through Tandem's float CPU path with a
float32 KV cache (test_engine_int8_smollm2.py runs the default: int8 and a float16 cache), against
transformers reading the same file (`from_pretrained(dir, gguf_file=...)`, which dequantizes it).

The file is imported by engine.gguf (its tokenizer included); both sides get the same token
ids, so these check the weights and kernels: logits for a prefill and 16 greedy steps, 32 greedy tokens on three
prompts, and the perplexity of a fixed English passage (tests/engine/data)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
pytest.importorskip("gguf")
pytest.importorskip("transformers")

from engine.scoring import greedy_run, passage_logits, perplexity  # noqa: E402
from engine_helpers import PASSAGE, SMOLLM2_PROMPT_IDS, SMOLLM2_PROMPTS, model_logits, worst_difference  # noqa: E402
from gguf_fixtures import smollm2_path, smollm2_reference_model  # noqa: E402, F401

LOGIT_TOLERANCE = 2e-2
PERPLEXITY_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory, smollm2_path, smollm2_reference_model):
    """(transformers' model for the file, Tandem's engine on the file imported by engine.gguf)."""
    from engine.gguf.importer import import_gguf
    from engine.loader import open_engine

    model_dir = tmp_path_factory.mktemp("smollm2") / "model"
    import_gguf(smollm2_path, model_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TANDEM_CPU_MATMUL", "float")  # the float path: the int8 one has its own checks
        patch.setenv("TANDEM_KV_CACHE", "float32")  # the kernels' arithmetic, not the cache's halves
        patch.setenv("TANDEM_DEVICE", "cpu")
        engine = open_engine(model_dir, backend="tvm")
    yield smollm2_reference_model, engine
    engine.close()


def test_smollm2_runs_its_gguf_blocks_as_they_are(smollm2):
    _, engine = smollm2
    from engine.tvm_backend.gguf_weights import open_gguf_weights

    kinds = set(open_gguf_weights(engine.model_dir, engine.chat_config).kinds.values())
    assert kinds == {"q4_1", "q8_0"}  # q4_1 linears, the q8_0 embedding and (tied) head
    assert engine.info.quantization == "gguf"


def test_prefill_and_16_greedy_steps_match_transformers(smollm2):
    model, engine = smollm2
    prompt = engine.tokenizer.encode(SMOLLM2_PROMPTS[0])
    tokens, ours = greedy_run(engine.session, prompt, 16)
    expected = model_logits(model, tokens)[len(prompt) - 1 :]
    worst = worst_difference(ours, expected)
    print(f"worst logit difference over a prefill and 16 steps: {worst:.2e}")
    assert worst < LOGIT_TOLERANCE
    assert [int(np.argmax(row)) for row in expected[:-1]] == tokens[len(prompt) :]


@pytest.mark.parametrize("prompt", SMOLLM2_PROMPTS, ids=SMOLLM2_PROMPT_IDS)
def test_32_greedy_tokens_equal_transformers(smollm2, prompt):
    import torch

    model, engine = smollm2
    ids = engine.tokenizer.encode(prompt)
    tokens, _ = greedy_run(engine.session, ids, 32)
    with torch.no_grad():
        expected = model.generate(
            torch.tensor([ids]), max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0].tolist()
    assert tokens == expected


def test_perplexity_of_an_english_passage_is_within_1_percent(smollm2):
    model, engine = smollm2
    ids = engine.tokenizer.encode(PASSAGE.read_text(encoding="utf-8"))
    assert 300 <= len(ids) <= 1000
    ours = passage_logits(engine.session, ids)
    theirs = model_logits(model, ids)[:-1]
    ours_ppl, theirs_ppl = perplexity(ids, ours), perplexity(ids, theirs)
    print(f"perplexity: tandem {ours_ppl:.4f}, transformers {theirs_ppl:.4f}")
    assert abs(ours_ppl - theirs_ppl) <= PERPLEXITY_TOLERANCE * theirs_ppl
