"""The int8 path on the real GGUF: SmolLM2-135M-Instruct's file imported as it is, run with
TANDEM_CPU_MATMUL=int8 (the host's fastest variant), its q8_0 embedding tied to the head computing
the head through the 8-bit-code int8 kernels (int8_kernels_q8.py), against transformers reading
the same file. The passage's perplexity on this path is test_engine_int8_smollm2.py's
(measured 36.10 against transformers' 35.94 with the head and the q4_1 layers on int8)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
pytest.importorskip("gguf")
pytest.importorskip("transformers")

from engine.scoring import forced_logits  # noqa: E402
from engine_helpers import SMOLLM2_PROMPTS, model_logits, worst_difference  # noqa: E402
from gguf_fixtures import smollm2_path, smollm2_reference_model  # noqa: E402, F401

INT8_LOGIT_TOLERANCE = 3.0
"""As test_engine_int8_smollm2.py's: the largest |logit| difference a real model's int8 path may
show over a prefill and 16 steps (its logits reach about 38)."""


@pytest.fixture(scope="module")
def int8_engine(tmp_path_factory, smollm2_path):
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
        yield engine
        engine.close()


def test_the_tied_q8_0_head_takes_the_8bit_int8_layout(int8_engine):
    from app.paths import cache_dir
    from engine.tvm_backend.compiler import compiled_model
    from engine.tvm_backend.gguf_weights import open_gguf_weights
    from engine.tvm_backend.target import cpu_target

    assert "int8 matmul" in int8_engine.info.device
    kinds = open_gguf_weights(int8_engine.model_dir, int8_engine.chat_config).kinds
    assert kinds["model.embed_tokens"] == "q8_0" and "lm_head" not in kinds  # tied: the head takes its kind
    compiled = compiled_model(int8_engine.chat_config.model_config, kinds, cpu_target(), cache_dir())
    head = {name: (shape, dtype) for name, shape, dtype in compiled.params}["lm_head.q_weight"]
    assert head == ((49152 // 32, 576 // 4, 32, 4), "int8")


def test_int8_logits_along_transformers_greedy_path_stay_within_tolerance(int8_engine, smollm2_reference_model):
    prompt = int8_engine.tokenizer.encode(SMOLLM2_PROMPTS[0])
    import torch

    with torch.no_grad():
        path = smollm2_reference_model.generate(
            torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0].tolist()
    expected = model_logits(smollm2_reference_model, path)[len(prompt) - 1 : -1]
    ours = forced_logits(int8_engine.session, prompt, path[len(prompt) : -1])
    worst = worst_difference(ours, expected)
    print(f"largest logit difference transformers vs Tandem int8 (GGUF): {worst:.3f}")
    assert 0 < worst < INT8_LOGIT_TOLERANCE
    assert [int(np.argmax(row)) for row in ours] == [int(np.argmax(row)) for row in expected]

