"""GGUF K-quants Q6_K and Q5_K run natively (no re-quantizing to Q8_0): a tiny F32 model written
with the `gguf` package, quantized by llama.cpp's own quantizer (`llama_cpp.llama_model_quantize`,
the peer extra: skipped without it), imported, and run on the float and the int8 CPU paths
against transformers reading the same quantized file."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
pytest.importorskip("gguf")
pytest.importorskip("transformers")

from engine.scoring import greedy_run  # noqa: E402
from engine_helpers import gguf_reference_logits, worst_difference  # noqa: E402
from gguf_fixtures import TINY_TEXTS, write_tiny_gguf  # noqa: E402

FTYPES = {"Q6_K": 18, "Q5_K_S": 16}
"""llama.cpp's llama_ftype values: MOSTLY_Q6_K, MOSTLY_Q5_K_S."""
FLOAT_TOLERANCE = 1e-3
"""As the other GGUF tests: the float path within 1e-3 of transformers (measured 3e-6)."""
INT8_RELATIVE_TOLERANCE = 0.03
"""The int8 path within 3% of the largest |logit|: measured 2.3% (0.072 of 3.1) on this model's
shape for Q6_K and 0.067 for Q5_K_S, and the same for a Q8_0 file of the same weights through
the same path: the
activations' int8 rounding, not the codes (the kernels match their int8 arithmetic exactly in
test_engine_int8_q8.py)."""
DECODE_STEPS = 8
CASES = [
    pytest.param("Q6_K", True, id="q6_k-tied"),
    pytest.param("Q5_K_S", False, id="q5_k_s-untied"),
]


def quantize_with_llama_cpp(source: Path, target: Path, ftype: str) -> Path:
    """`source` (an F32 GGUF) quantized by llama.cpp to `ftype`, one thread."""
    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.nthread = 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    assert status == 0, f"llama_model_quantize failed ({status})"
    return target


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """build(ftype, tie) -> (quantized GGUF, Tandem model directory imported from it)."""
    from engine.gguf.importer import import_gguf

    built: dict[tuple[str, bool], tuple[Path, Path]] = {}

    def build(ftype: str, tie: bool) -> tuple[Path, Path]:
        if (ftype, tie) not in built:
            folder = tmp_path_factory.mktemp(f"kquant-{ftype}")
            source = write_tiny_gguf(folder / "f32.gguf", types="F32", tie=tie).path
            path = quantize_with_llama_cpp(source, folder / f"{ftype}.gguf", ftype)
            import_gguf(path, folder / "model")
            built[(ftype, tie)] = path, folder / "model"
        return built[(ftype, tie)]

    return build


@pytest.mark.parametrize(("ftype", "tie"), CASES)
def test_k_quant_tensors_import_in_their_own_kinds(quantized, ftype, tie):
    from engine.config import read_chat_config
    from engine.tvm_backend.gguf_weights import open_gguf_weights

    _, model_dir = quantized(ftype, tie)
    config = read_chat_config(model_dir)
    kinds = open_gguf_weights(model_dir, config).kinds
    expected = {"Q6_K": "q6_k", "Q5_K_S": "q5_k"}[ftype]
    assert kinds["model.layers.0.mlp.gate_up_proj"] == expected
    assert kinds["model.layers.1.self_attn.o_proj"] == expected
    # llama.cpp writes the output head (or the embedding it is tied to) in Q6_K.
    assert kinds["model.embed_tokens" if tie else "lm_head"] == "q6_k"
    assert config.tandem["gguf"]["routes"].get("requantized", 0) == 0


@pytest.mark.parametrize("mode", ["float", "int8"])
@pytest.mark.parametrize(("ftype", "tie"), CASES)
def test_k_quant_model_matches_transformers_reading_the_same_file(quantized, monkeypatch, ftype, tie, mode):
    from engine.loader import open_engine

    if mode == "int8":
        from engine.tvm_backend.int8_kernels import supports_int8
        from engine.tvm_backend.target import host_target

        if not supports_int8(host_target("cpu").target):
            pytest.skip("this CPU has none of the int8 kernels' instruction sets")
    monkeypatch.setenv("TANDEM_CPU_MATMUL", mode)
    monkeypatch.setenv("TANDEM_DEVICE", "cpu")
    # A float32 cache: this checks the codes, which a float16 cache's rounding (2e-3) would hide.
    monkeypatch.setenv("TANDEM_KV_CACHE", "float32")
    path, model_dir = quantized(ftype, tie)
    engine = open_engine(model_dir, backend="tvm")
    try:
        assert ("int8 matmul" in engine.info.device) == (mode == "int8")
        prompt = engine.tokenizer.encode(TINY_TEXTS[0])
        tokens, ours = greedy_run(engine.session, prompt, DECODE_STEPS)
    finally:
        engine.close()
    expected = gguf_reference_logits(path, tokens)[len(prompt) - 1 :]
    worst = worst_difference(ours, expected)
    print(f"{ftype} {mode}: worst logit difference against transformers {worst:.2e}")
    tolerance = FLOAT_TOLERANCE if mode == "float" else INT8_RELATIVE_TOLERANCE * float(np.abs(expected).max())
    assert worst < tolerance
    assert [int(np.argmax(row)) for row in expected[:-1]] == tokens[len(prompt) :]
