"""The int8-activation matmul path (TANDEM_CPU_MATMUL=int8): each variant of its kernels that
this CPU can run (AVX512-VNNI, AVX-VNNI, AVX2) against a numpy version of the same int8
arithmetic, the whole model against transformers with each variant forced, and every variant
(ARM's dotprod too) compiled to the instructions it is named for.

End to end the activations' int8 rounding moves the logits: the tolerance is INT8_LOGIT_TOLERANCE
(measured worst on these tiny models: 4.5e-3 to 5.5e-3) instead of the float path's 1e-3, and the
greedy tokens must be the same."""

from __future__ import annotations

import re

import numpy as np
import pytest

from engine.errors import EngineError
from engine.quantization import quantize_q4

INT8_LOGIT_TOLERANCE = 2e-2
PROMPT = "The quick brown fox jumps over the lazy dog. Tandem keeps every conversation"
DECODE_STEPS = 16


"""The variants an x86 host may run; each test skips those this CPU lacks."""
BUILD_ONLY = {
    "avx512-vnni": ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"}, [r"vpdpbusd\s+%zmm"]),
    "avx-vnni": ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "alderlake"}, [r"\{vex\}\s+vpdpbusd\s+%ymm"]),
    "avx2": (
        {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"},
        [r"vpmaddubsw\s+%ymm", r"vpmaddwd\s+%ymm"],
    ),
    "neon-dotprod": (
        {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]},
        [r"sdot\s+v\d+\.4s"],
    ),
}
"""A CPU of each variant's kind, and what its kernels' assembly must contain (regexes)."""


@pytest.fixture(scope="module")
def int8_target(host_target):
    from engine.tvm_backend.int8_kernels import supports_int8

    if not supports_int8(host_target):
        pytest.skip("this CPU has none of the int8 variants' instructions")
    return host_target


def int8_reference(x: np.ndarray, q_weight: np.ndarray, q_scale: np.ndarray) -> np.ndarray:
    """The kernels' arithmetic in numpy, exact up to the order of float sums: per group of 32,
    xs = max|x| / 127, xq = round(x * (127 / max|x|)) to even, dot = sum(code * xq) - 7 * sum(xq);
    y = sum over groups of scale * xs * dot."""
    rows, k_in = x.shape
    n_out, groups = q_scale.shape
    padded = np.zeros((rows, groups * 32), np.float32)
    padded[:, :k_in] = x
    grouped = padded.reshape(rows, groups, 32)
    amax = np.abs(grouped).max(axis=2)
    xs = amax / np.float32(127)
    inverse = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    xq = np.rint(grouped * inverse[:, :, None]).astype(np.int64)
    as_bytes = q_weight.astype("<u4").view(np.uint8)
    codes = np.stack([as_bytes & 0x0F, as_bytes >> 4], axis=-1).reshape(n_out, groups, 32).astype(np.int64)
    dots = np.einsum("ngk,rgk->rng", codes, xq) - 7 * xq.sum(axis=2)[:, None, :]
    return (dots * xs[:, None, :].astype(np.float64) * q_scale.astype(np.float64)[None]).sum(axis=2)


def run_kernel(target, isa: str, kind: str, n_out: int, k_in: int, x: np.ndarray, q_weight, q_scale) -> np.ndarray:
    import tvm

    from engine.tvm_backend.int8_kernels import int8_linear_kernel, int8_tile
    from engine.tvm_backend.kernels import LinearShape
    from engine.tvm_backend.repack import repacked_params

    shape = LinearShape(kind, n_out, k_in, int8_tile(n_out), "int8")
    phase = "decode" if x.shape[0] == 1 else "prefill"
    kernel = int8_linear_kernel(shape, phase, isa).with_attr("global_symbol", "linear")
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel}), target=target)
    wanted = [(f"w.{suffix}", spec, dtype) for suffix, (spec, dtype) in shape.weight_shapes().items()]
    weights = repacked_params({"w.q_weight": q_weight, "w.q_scale": q_scale}, wanted, tied=False)
    out = tvm.runtime.tensor(np.zeros((x.shape[0], n_out), np.float32))
    library["linear"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(w) for w in weights), out)
    return out.numpy()


@pytest.mark.parametrize("kind", ["q4", "q4h"])
@pytest.mark.parametrize(
    ("n_out", "k_in"),
    [(64, 96), (48, 96), (64, 80)],
    ids=["tile32", "tile16", "ragged-group"],
)
@pytest.mark.parametrize("rows", [1, 3, 9], ids=["decode", "prefill-3", "prefill-9"])
def test_kernel_matches_the_same_int8_math_in_numpy(host_target, isa, kind, n_out, k_in, rows):
    rng = np.random.default_rng(n_out + k_in + rows)
    weight = rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32)
    q_weight, q_scale = quantize_q4(weight, "float16" if kind == "q4h" else "float32")
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero group quantizes to zeros, not NaN
    x[-1, 5] = 40.0  # an outlier sets its group's activation scale

    y = run_kernel(host_target, isa, kind, n_out, k_in, x, q_weight, q_scale)

    expected = int8_reference(x, q_weight, q_scale)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_int8_math_stays_close_to_the_float_matmul(host_target, isa):
    rng = np.random.default_rng(1)
    weight = rng.normal(0, 0.05, (64, 256)).astype(np.float32)
    q_weight, q_scale = quantize_q4(weight, "float32")
    x = rng.normal(0, 1, (1, 256)).astype(np.float32)
    from engine.quantization import dequantize_q4

    exact = x @ dequantize_q4(q_weight, q_scale).T
    y = run_kernel(host_target, isa, "q4", 64, 256, x, q_weight, q_scale)
    # int8 rounding of x: at most half a step (max|x| / 254) per element, about 1% relative here.
    assert np.abs(y - exact).max() < 0.02 * np.abs(exact).max()


@pytest.mark.parametrize("variant", list(BUILD_ONLY))
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_every_variant_compiles_to_its_instructions(variant, phase):
    """Built (not run) for a CPU of its kind, so the variants this CPU lacks stay buildable."""
    import tvm

    from engine.tvm_backend.int8_kernels import available_isas, int8_linear_kernel
    from engine.tvm_backend.kernels import LinearShape

    spec, instructions = BUILD_ONLY[variant]
    target = tvm.target.Target(spec)
    assert available_isas(target)[0] == variant
    kernel = int8_linear_kernel(LinearShape("q4h", 64, 96, 32, "int8"), phase, variant)
    library = tvm.tirx.build(tvm.IRModule({"linear": kernel.with_attr("global_symbol", "linear")}), target=target)
    assembly = library.inspect_source("asm")
    for instruction in instructions:
        assert re.search(instruction, assembly), instruction


@pytest.fixture
def int8_mode(monkeypatch, isa):
    """The int8 path, its variant forced to `isa`."""
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "int8")
    monkeypatch.setenv("TANDEM_INT8_ISA", isa)
    monkeypatch.setenv("TANDEM_DEVICE", "cpu")
    return isa


CASES = [
    pytest.param("llama", False, "q4f32_1", {}, id="llama-untied-q4f32_1"),
    pytest.param("qwen2", True, "q4f32_1", {}, id="qwen2-tied-q4f32_1"),
    pytest.param("llama", True, "q4f16_1", {}, id="llama-tied-q4f16_1"),
    pytest.param("llama", True, "q4f32_1", {"intermediate_size": 80}, id="llama-ragged-group-q4f32_1"),
]


def compiled_param_dtypes(engine) -> set[str]:
    from app.paths import cache_dir
    from engine.models.llama import weight_kind
    from engine.tvm_backend.compiler import compiled_model
    from engine.tvm_backend.target import cpu_target

    config = engine.chat_config
    compiled = compiled_model(config.model_config, weight_kind(config.quantization), cpu_target(), cache_dir())
    assert compiled.compile_s == 0.0  # the engine's own library, from the cache
    return {dtype for _, _, dtype in compiled.params}


@pytest.mark.parametrize(("model_type", "tie", "quantization", "shape"), CASES)
def test_int8_model_matches_transformers_within_its_tolerance(
    int8_mode, model_type, tie, quantization, shape, tiny_hf_checkpoint, tiny_mlc_model, hf_weights_from_mlc
):
    from engine.loader import open_engine
    from engine.scoring import greedy_run
    from engine_helpers import reference_logits, worst_difference

    hf_dir = tiny_hf_checkpoint(model_type=model_type, tie=tie, **shape)
    mlc_dir = tiny_mlc_model(quantization, model_type=model_type, tie=tie, **shape)
    engine = open_engine(mlc_dir, backend="tvm")
    assert f"int8 matmul ({int8_mode})" in engine.info.device
    assert "uint8" in compiled_param_dtypes(engine)  # the VNNI layout, so the int8 kernels ran
    prompt = engine.tokenizer.encode(PROMPT)

    tokens, ours = greedy_run(engine.session, prompt, DECODE_STEPS)

    expected = reference_logits(hf_dir, hf_weights_from_mlc(mlc_dir), tokens)[len(prompt) - 1 :]
    worst = worst_difference(ours, expected)
    assert worst < INT8_LOGIT_TOLERANCE
    assert [int(np.argmax(row)) for row in expected[:-1]] == tokens[len(prompt) :]
    engine.close()


def test_unknown_matmul_mode_names_the_variable_and_the_choices(monkeypatch):
    from engine.tvm_backend.target import cpu_target

    monkeypatch.setenv("TANDEM_CPU_MATMUL", "int4")
    with pytest.raises(EngineError, match=r"TANDEM_CPU_MATMUL.*float or int8"):
        cpu_target()


def test_matmul_mode_keys_the_compile_and_weight_caches(monkeypatch, int8_target):
    from engine.tvm_backend.target import cpu_target

    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")
    float_target = cpu_target()
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "int8")
    int8_target = cpu_target()
    assert (float_target.cpu_matmul, int8_target.cpu_matmul) == ("float", "int8")
    # Both caches (compiler.cache_key, weight_cache.weights_key) include the target's key.
    assert float_target.cache_key != int8_target.cache_key


def test_int8_falls_back_to_float_on_a_cpu_without_avx2_or_vnni(monkeypatch):
    import tvm

    from engine.tvm_backend.target import cpu_matmul_mode

    monkeypatch.setenv("TANDEM_CPU_MATMUL", "int8")
    sandybridge = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "sandybridge"})
    skylake = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"})
    assert cpu_matmul_mode(sandybridge) == "float"  # AVX without AVX2
    assert cpu_matmul_mode(skylake) == "int8"  # AVX-512 without VNNI: the AVX2 variant


@pytest.mark.parametrize(
    ("mcpu", "variants"),
    [
        ("cascadelake", ["avx512-vnni", "avx2"]),
        ("alderlake", ["avx-vnni", "avx2"]),
        ("sapphirerapids", ["avx512-vnni", "avx-vnni", "avx2"]),
        ("znver3", ["avx2"]),
        ("skylake-avx512", ["avx2"]),
    ],
)
def test_the_fastest_variant_the_cpu_has_is_chosen(monkeypatch, mcpu, variants):
    import tvm

    from engine.tvm_backend.int8_kernels import available_isas, int8_isa

    monkeypatch.delenv("TANDEM_INT8_ISA", raising=False)
    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu})
    assert available_isas(target) == variants
    assert int8_isa(target) == variants[0]
    assert int8_isa(target, forced="avx2") == "avx2"


def test_a_forced_variant_the_cpu_lacks_names_what_it_has(monkeypatch, int8_target):
    from engine.tvm_backend.int8_kernels import available_isas
    from engine.tvm_backend.target import cpu_target

    monkeypatch.setenv("TANDEM_CPU_MATMUL", "int8")
    lacking = next(name for name in ("avx512-vnni", "avx-vnni", "neon-dotprod") if name not in available_isas(int8_target))
    monkeypatch.setenv("TANDEM_INT8_ISA", lacking)
    with pytest.raises(EngineError, match=rf"TANDEM_INT8_ISA={lacking} asks for instructions this CPU lacks.*has: "):
        cpu_target()
    monkeypatch.setenv("TANDEM_INT8_ISA", "sse9")
    with pytest.raises(EngineError, match=r"Unknown int8 variant 'sse9'.*avx512-vnni, avx-vnni, avx2, neon-dotprod"):
        cpu_target()
    monkeypatch.setenv("TANDEM_INT8_ISA", "avx2")
    forced = cpu_target()
    monkeypatch.delenv("TANDEM_INT8_ISA")
    assert cpu_target().int8_isa == available_isas(int8_target)[0]
    assert (forced.int8_isa, ":int8:avx2" in forced.cache_key) == ("avx2", True)


def test_int8_is_the_default_unless_the_model_or_the_user_says_float(monkeypatch):
    import tvm

    from engine.tvm_backend.target import cpu_matmul_mode

    cascadelake = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"})
    monkeypatch.delenv("TANDEM_CPU_MATMUL", raising=False)
    assert cpu_matmul_mode(cascadelake) == "int8"
    assert cpu_matmul_mode(cascadelake, "float") == "float"  # the model's config asks for float
    with pytest.raises(EngineError, match=r"mlc-chat-config.json.*float or int8"):
        cpu_matmul_mode(cascadelake, "fp8")
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "int8")
    assert cpu_matmul_mode(cascadelake, "float") == "int8"  # the user's setting wins


def test_the_embedded_model_runs_the_numerics_it_was_measured_with(monkeypatch):
    from assets import embedded_model_dir
    from engine.loader import open_engine

    monkeypatch.delenv("TANDEM_CPU_MATMUL", raising=False)
    engine = open_engine(embedded_model_dir(), backend="tvm")
    try:
        assert "int8" not in engine.info.device
    finally:
        engine.close()
