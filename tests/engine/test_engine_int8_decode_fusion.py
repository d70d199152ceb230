"""The fused int8 kernels (engine/tvm_backend/int8_decode.py, and int8_rows.py for many rows):
each fusion (RMSNorm before the linear layer, SwiGLU before it, the residual after) on each weight
kind family (4-bit codes with and without a stored min, 8-bit codes), for each int8 variant this
CPU can run, against the unfused kernel fed the same prologue as the unfused graph computes it
(topi's rms_norm, the CPU pipeline's SiLU); and whole models decoding fused, one sequence and a
batch of them, against the same model with TANDEM_DECODE_FUSION=off, along the same tokens.

Both must be bit-identical: the int8 rounding of the activations turns a one-ulp change of the
row (an RMSNorm summed in another order) into logit changes of up to 0.8 on SmolLM2, so the
fused prologue repeats the unfused arithmetic step for step."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
gguf = pytest.importorskip("gguf")

from engine.block_codes import BlockArrays  # noqa: E402
from gguf_fixtures import tiny_gguf  # noqa: E402, F401
from test_engine_gguf_kernels import QTYPES, block_tensor  # noqa: E402
EPS = 1e-5


def int8_weights(kind: str, weight: np.ndarray):
    """(LinearShape, the weights in its int8 layout) for a [n_out, k_in] float matrix."""
    from engine.tvm_backend.int8_kernels import int8_tile
    from engine.tvm_backend.kernels import LinearShape
    from engine.tvm_backend.repack import repacked_params

    n_out, k_in = weight.shape
    tensor = block_tensor(kind, weight)
    shape = LinearShape(kind, n_out, k_in, int8_tile(n_out), "int8")
    wanted = [(f"w.{suffix}", spec, dtype) for suffix, (spec, dtype) in shape.weight_shapes().items()]
    return shape, list(repacked_params(BlockArrays({"w.weight": tensor}), wanted, tied=False))


def run(target, kernel, *arrays: np.ndarray, n_out: int, rows: int = 1, dtype: str = "float32") -> np.ndarray:
    library = tvm.tirx.build(tvm.IRModule({"k": kernel.with_attr("global_symbol", "k")}), target=target)
    out = tvm.runtime.tensor(np.zeros((rows, n_out), dtype))
    library["k"](*(tvm.runtime.tensor(a) for a in arrays), out)
    return out.numpy()


def unfused_prologue(target, prologue: str, x: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """The row the unfused graph hands its linear kernel: topi's rms_norm (what relax's
    nn.RMSNorm legalizes to), or split + the CPU pipeline's SiLU (pipeline._silu) * up."""
    from tvm import te, topi

    from engine.tvm_backend.pipeline import silu_value

    rows, width = x.shape
    x_in = te.placeholder((rows, width), "float32", name="x")
    if prologue == "rms_norm":
        weight = te.placeholder((width,), "float32", name="weight")
        args = [x_in, weight, topi.nn.rms_norm(x_in, weight, [1], EPS)]
        arrays = [x, norm]
    else:
        half = width // 2
        args = [x_in, te.compute((rows, half), lambda m, k: silu_value(x_in[m, k]) * x_in[m, half + k], name="swiglu")]
        arrays = [x]
    func = te.create_prim_func(args).with_attr("global_symbol", "prologue")
    library = tvm.tirx.build(tvm.IRModule({"prologue": func}), target=target)
    out = tvm.runtime.tensor(np.zeros([int(d) for d in args[-1].shape], np.float32))
    library["prologue"](*(tvm.runtime.tensor(a) for a in arrays), out)
    return out.numpy()


@pytest.mark.parametrize("kind", list(QTYPES))
@pytest.mark.parametrize("prologue", ["rms_norm", "swiglu", "none"])
def test_fused_kernel_matches_the_unfused_kernel_on_the_same_row(host_target, isa, kind, prologue):
    from engine.tvm_backend.int8_decode import DecodeFusion, fused_decode_kernel
    from engine.tvm_backend.int8_kernels import int8_linear_kernel
    from engine.tvm_backend.int8_kernels_q8 import q8_linear_kernel

    rng = np.random.default_rng(len(kind) + len(prologue))
    n_out, k_in = 64, 576
    weight = rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32)
    weight[:, :32] += 0.04  # an off-centre block: q4_1's min differs from -8 * scale
    shape, weights = int8_weights(kind, weight)
    fusion = DecodeFusion(prologue, residual=prologue != "rms_norm", eps=EPS)
    x = rng.normal(0, 1, (1, fusion.input_width(k_in))).astype(np.float32)
    x[0, 40] = 300.0  # a massive activation: the rest of its group quantizes coarsely
    norm = rng.normal(1, 0.2, k_in).astype(np.float32)
    residual = rng.normal(0, 1, (1, n_out)).astype(np.float32)
    row = x if prologue == "none" else unfused_prologue(host_target, prologue, x, norm)

    inputs = [x, *([norm] if prologue == "rms_norm" else []), *weights, *([residual] if fusion.residual else [])]
    fused = run(host_target, fused_decode_kernel(shape, fusion, isa), *inputs, n_out=n_out)

    unfused_kernel = (q8_linear_kernel if kind == "q8_0" else int8_linear_kernel)(shape, "decode", isa)
    expected = run(host_target, unfused_kernel, row, *weights, n_out=n_out) + (residual if fusion.residual else 0)
    np.testing.assert_array_equal(fused, expected)


@pytest.mark.parametrize("kind", list(QTYPES))
@pytest.mark.parametrize("prologue", ["rms_norm", "swiglu", "none"])
def test_many_row_fused_kernel_matches_the_unfused_many_row_kernel(host_target, isa, kind, prologue):
    """A batched decode step's kernels: every row's prologue as the unfused graph computes it, the
    many-row kernel's integer math, the residual added after, at row counts around the row block."""
    from engine.tvm_backend.int8_decode import DecodeFusion
    from engine.tvm_backend.int8_rows import rows_linear_kernel

    rng = np.random.default_rng(len(kind) * len(prologue))
    n_out, k_in = 64, 576
    weight = rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32)
    weight[:, :32] += 0.04
    shape, weights = int8_weights(kind, weight)
    fusion = DecodeFusion(prologue, residual=prologue != "rms_norm", eps=EPS)
    norm = rng.normal(1, 0.2, k_in).astype(np.float32)
    for rows in (3, 9):
        x = rng.normal(0, 1, (rows, fusion.input_width(k_in))).astype(np.float32)
        x[-1, 40] = 300.0
        residual = rng.normal(0, 1, (rows, n_out)).astype(np.float32)
        row_inputs = x if prologue == "none" else unfused_prologue(host_target, prologue, x, norm)
        inputs = [x, *([norm] if prologue == "rms_norm" else []), *weights, *([residual] if fusion.residual else [])]
        fused = run(host_target, rows_linear_kernel(shape, isa, fusion), *inputs, n_out=n_out, rows=rows)
        unfused = run(host_target, rows_linear_kernel(shape, isa), row_inputs, *weights, n_out=n_out, rows=rows)
        np.testing.assert_array_equal(fused, unfused + (residual if fusion.residual else 0), err_msg=f"{rows} rows")


@pytest.mark.parametrize("kind", list(QTYPES))
@pytest.mark.parametrize("rows", [1, 9], ids=["one-row", "many-rows"])
def test_halves_in_and_out_are_the_float32_kernels_widened_and_narrowed(host_target, isa, kind, rows):
    """With a float16 KV cache, qkv writes halves and o_proj reads them: the same kernels, their
    output rounded to float16 and their input widened from it, and nothing else changed."""
    from engine.tvm_backend.int8_decode import DecodeFusion, fused_decode_kernel
    from engine.tvm_backend.int8_rows import rows_linear_kernel

    def kernel(fusion: DecodeFusion):
        return fused_decode_kernel(shape, fusion, isa) if rows == 1 else rows_linear_kernel(shape, isa, fusion)

    rng = np.random.default_rng(len(kind) + rows)
    n_out, k_in = 64, 576
    shape, weights = int8_weights(kind, rng.normal(0, 0.05, (n_out, k_in)).astype(np.float32))
    x = rng.normal(0, 1, (rows, k_in)).astype(np.float32)
    norm = rng.normal(1, 0.2, k_in).astype(np.float32)
    to_halves = DecodeFusion("rms_norm", eps=EPS, output_dtype="float16")
    halves = run(host_target, kernel(to_halves), x, norm, *weights, n_out=n_out, rows=rows, dtype="float16")
    floats = run(host_target, kernel(DecodeFusion("rms_norm", eps=EPS)), x, norm, *weights, n_out=n_out, rows=rows)
    np.testing.assert_array_equal(halves, floats.astype(np.float16))

    x16 = x.astype(np.float16)
    residual = rng.normal(0, 1, (rows, n_out)).astype(np.float32)
    from_halves = DecodeFusion(residual=True, input_dtype="float16")
    widened = run(host_target, kernel(from_halves), x16, *weights, residual, n_out=n_out, rows=rows)
    expected = run(host_target, kernel(DecodeFusion(residual=True)), x16.astype(np.float32), *weights, residual, n_out=n_out, rows=rows)
    np.testing.assert_array_equal(widened, expected)
    assert "_from_float16" in from_halves.dtype_suffix and "_to_float16" in to_halves.dtype_suffix
    with pytest.raises(ValueError, match="float32 input"):
        DecodeFusion("rms_norm", input_dtype="float16")


def test_a_fusion_without_whole_groups_is_refused():
    from engine.tvm_backend.int8_decode import DecodeFusion, fused_decode_kernel, fusable
    from engine.tvm_backend.kernels import LinearShape

    ragged = LinearShape("q4", 64, 80, 32, "int8")
    assert not fusable(ragged) and not fusable(LinearShape("q4_1", 64, 96, 32))  # float layout
    with pytest.raises(ValueError, match="whole groups of 32"):
        fused_decode_kernel(ragged, DecodeFusion("rms_norm"), "avx2")


def decode_calls(session, prompt: list[int], steps: int) -> set[str]:
    """The functions the VM calls while decoding `steps` tokens after `prompt`."""
    from bench.engine import vm_call_times

    session.reset()
    token = int(np.argmax(session.prefill(prompt)))
    with vm_call_times(session._vm) as totals:
        for _ in range(steps):
            token = int(np.argmax(session.decode(token)))
    return set(totals)


def decoded_states(session, prompt: list[int], tokens: list[int]):
    """The router's probe states ([2, hidden]) after decoding `tokens` one at a time after `prompt`."""
    session.reset()
    session.prefill(prompt)
    for token in tokens:
        session.decode(token)
    return session.last_states()


def fused_and_unfused(monkeypatch, model_dir, isa: str, prompt_text: str, steps: int):
    """Greedy tokens and logits of the fused decode, the unfused logits along the same tokens,
    the functions each decode called, and the probe states each decode exports at its end."""
    from engine.loader import open_engine
    from engine.scoring import forced_logits, greedy_run

    monkeypatch.setenv("TANDEM_CPU_MATMUL", "int8")
    monkeypatch.setenv("TANDEM_INT8_ISA", isa)
    monkeypatch.setenv("TANDEM_DEVICE", "cpu")
    monkeypatch.setenv("TANDEM_DECODE_FUSION", "on")
    fused_engine = open_engine(model_dir, backend="tvm")
    prompt = fused_engine.tokenizer.encode(prompt_text)
    tokens, fused = greedy_run(fused_engine.session, prompt, steps)
    calls = decode_calls(fused_engine.session, prompt, 2)
    answer = tokens[len(prompt) :]
    fused_states = decoded_states(fused_engine.session, prompt, answer)
    fused_engine.close()
    monkeypatch.setenv("TANDEM_DECODE_FUSION", "off")
    plain_engine = open_engine(model_dir, backend="tvm")
    plain = forced_logits(plain_engine.session, prompt, tokens[len(prompt) :])
    plain_calls = decode_calls(plain_engine.session, prompt, 2)
    plain_states = decoded_states(plain_engine.session, prompt, answer)
    plain_engine.close()
    return prompt, tokens, fused, plain, calls, plain_calls, (fused_states, plain_states)


def assert_same_decode(prompt, tokens, fused, plain, states):
    for fused_row, plain_row in zip(fused, plain, strict=True):
        np.testing.assert_array_equal(fused_row, plain_row)
    fused_states, plain_states = states
    assert fused_states.shape == plain_states.shape == (2, fused_states.shape[1])
    np.testing.assert_allclose(fused_states, plain_states, rtol=1e-5, atol=1e-5)


def fusions(calls: set[str]) -> set[str]:
    """The prologues of the fused kernels among `calls` (fused_linear names them)."""
    return {prologue for name in calls for prologue in ("rms_norm", "none", "swiglu") if f"_decode_{prologue}_" in name}


def test_q4_model_decodes_fused_as_it_does_unfused(monkeypatch, isa, tiny_mlc_model):
    mlc_dir = tiny_mlc_model("q4f16_1", model_type="llama", tie=True)
    prompt, tokens, fused, plain, calls, plain_calls, states = fused_and_unfused(
        monkeypatch, mlc_dir, isa, "The quick brown fox jumps over the lazy dog.", 12
    )
    assert_same_decode(prompt, tokens, fused, plain, states)
    assert fusions(calls) == {"rms_norm", "none", "swiglu"} and not fusions(plain_calls)
    # the residual adds and the SwiGLU run inside the kernels
    assert not any("add" in name or "silu" in name for name in calls), calls
    assert any("silu" in name for name in plain_calls)


def test_gguf_q4_1_with_a_q8_0_head_decodes_fused_as_it_does_unfused(monkeypatch, isa, tiny_gguf, tmp_path):  # noqa: F811
    from engine.gguf.importer import import_gguf

    matrices = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    built = tiny_gguf(types={"token_embd": "Q8_0", **{name: "Q4_1" for name in matrices}})
    import_gguf(built.path, tmp_path / "model")
    prompt, tokens, fused, plain, calls, plain_calls, states = fused_and_unfused(
        monkeypatch, tmp_path / "model", isa, "hello tandem, hello world", 12
    )
    assert_same_decode(prompt, tokens, fused, plain, states)
    assert fusions({name for name in calls if name.startswith("q4_1_")}) == {"rms_norm", "none", "swiglu"}
    assert not fusions(plain_calls)
    vocab = fused[0].shape[-1]
    assert f"q8_0_decode_{vocab}x256" in calls  # the tied q8_0 head: the unfused 8-bit-code kernel


def batched_decode(monkeypatch, model_dir, isa: str, fusion: str, prompts: list[str], tokens=None, steps: int = 6):
    """Logits of `steps` batched decode steps (one row per prompt; greedy, or along `tokens`),
    the tokens fed, and the functions a batched step called."""
    from bench.engine import vm_call_times
    from engine.loader import open_engine
    from engine.tvm_backend.batch_session import BatchSession

    monkeypatch.setenv("TANDEM_CPU_MATMUL", "int8")
    monkeypatch.setenv("TANDEM_INT8_ISA", isa)
    monkeypatch.setenv("TANDEM_DEVICE", "cpu")
    monkeypatch.setenv("TANDEM_DECODE_FUSION", fusion)
    engine = open_engine(model_dir, backend="tvm")
    try:
        batch = BatchSession(engine.session, len(prompts), 512, 64)
        ids = list(range(len(prompts)))
        fed: list[list[int]] = []
        for sequence, text in zip(ids, prompts):
            prompt = engine.tokenizer.encode(text)
            batch.add(sequence)
            batch.prefill(sequence, prompt[:-1])
            fed.append(prompt[-1:])
        logits = []
        for step in range(steps):
            with vm_call_times(batch._vm) as calls:
                rows = batch.decode(ids, [each[-1] for each in fed])
            logits.append(rows)
            chosen = rows.argmax(axis=1).tolist() if tokens is None else tokens[step + 1]
            for each, token in zip(fed, chosen):
                each.append(int(token))
        return logits, [[each[i] for each in fed] for i in range(steps + 1)], set(calls)
    finally:
        engine.close()


def test_a_batched_decode_step_runs_fused_as_it_does_unfused(monkeypatch, isa, tiny_mlc_model):
    mlc_dir = tiny_mlc_model("q4f16_1", model_type="llama", tie=True)
    prompts = ["The quick brown fox", "jumps over the lazy dog.", "hello tandem", "a b c d e f g"]
    fused, tokens, calls = batched_decode(monkeypatch, mlc_dir, isa, "on", prompts)
    plain, _, plain_calls = batched_decode(monkeypatch, mlc_dir, isa, "off", prompts, tokens)
    for step, (fused_rows, plain_rows) in enumerate(zip(fused, plain, strict=True)):
        np.testing.assert_array_equal(fused_rows, plain_rows, err_msg=f"step {step}")
    names = {prologue for name in calls for prologue in ("rms_norm", "none", "swiglu") if f"_rows_{prologue}_" in name}
    assert names == {"rms_norm", "none", "swiglu"}, calls
    # the norms, residual adds and the SwiGLU run inside the many-row kernels
    assert not any(name in ("rms_norm", "add") or "silu" in name for name in calls), calls
    assert any("silu" in name for name in plain_calls) and "rms_norm" in plain_calls


def test_the_fusion_setting_keys_the_library_and_rejects_unknown_values(monkeypatch):
    from engine.errors import EngineError
    from engine.tvm_backend.int8_kernels import supports_int8
    from engine.tvm_backend.target import cpu_target

    monkeypatch.setenv("TANDEM_DEVICE", "cpu")
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "int8")
    if not supports_int8(cpu_target().target):
        pytest.skip("this CPU has none of the int8 kernels' instruction sets")
    monkeypatch.delenv("TANDEM_DECODE_FUSION", raising=False)
    default = cpu_target()
    monkeypatch.setenv("TANDEM_DECODE_FUSION", "off")
    off = cpu_target()
    assert default.decode_fusion and not off.decode_fusion
    assert default.cache_key != off.cache_key
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")  # float has no fused decode, whatever the setting
    monkeypatch.setenv("TANDEM_DECODE_FUSION", "on")
    assert not cpu_target().decode_fusion
    monkeypatch.setenv("TANDEM_DECODE_FUSION", "sometimes")
    with pytest.raises(EngineError, match="TANDEM_DECODE_FUSION"):
        cpu_target()
