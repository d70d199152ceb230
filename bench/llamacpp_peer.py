"""llama.cpp as the benchmark's peer: the same random weights written as a Q4_0 GGUF and run
through llama-cpp-python with 2 threads (optional: `pip install -e '.[peer]'`, see INSTALL_HINT).

Every weight matrix, the tied embedding included, is stored Q4_0 (like `llama-quantize --pure`),
so both engines read the same number of bytes per token."""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.rounds import Round

INSTALL_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON '
    "-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF "
    "-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF\" pip install -e '.[peer]'   "
    "(builds llama.cpp from source, about 10 minutes on 2 cores)"
)
THREADS = 2
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
BYTE_TOKENS = 256
NORMAL, CONTROL, BYTE = 1, 3, 6  # llama.cpp's token types


def missing_packages() -> list[str]:
    return [name for name in ("gguf", "llama_cpp") if importlib.util.find_spec(name) is None]


LLAMA_FTYPE_MOSTLY_Q4_K_M = 15
"""llama.cpp's llama_ftype for Q4_K_M (Ollama's default: Q4_K, with Q6_K for some attn_v and
ffn_down tensors and the output head)."""


def write_gguf(hf_dir: Path, out_path: Path, matrices: str = "Q4_0") -> None:
    """The HF checkpoint's weights as a GGUF of architecture llama, every matrix in `matrices`
    (Q4_0, or F16 as llama.cpp's quantizer's input; norms stay float32). q and k rows are
    permuted into the interleaved rotary layout llama.cpp expects, as its own converter does,
    so the model computes the same function."""
    import gguf
    import numpy as np
    import transformers

    config = transformers.AutoConfig.from_pretrained(hf_dir)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    writer = gguf.GGUFWriter(str(out_path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config.hidden_size // heads)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0 if matrices == "Q4_0" else gguf.LlamaFileType.MOSTLY_F16)
    _add_placeholder_vocab(writer, config.vocab_size)

    for hf_name, array in _hf_tensors(hf_dir):
        name = _gguf_name(hf_name)
        if name is None:
            continue
        array = array.astype(np.float32)
        if hf_name.endswith("q_proj.weight"):
            array = _rotary_interleaved(array, heads)
        elif hf_name.endswith("k_proj.weight"):
            array = _rotary_interleaved(array, kv_heads)
        if array.ndim == 2 and matrices == "F16":
            writer.add_tensor(name, array.astype(np.float16))
        elif array.ndim == 2:
            quantized = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q4_0)
            writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize_q4_k_m(source: Path, out_path: Path) -> None:
    """`source` (an F16 GGUF) quantized to Q4_K_M by llama.cpp's own quantizer, 2 threads."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = THREADS
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out_path).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source} to Q4_K_M (status {status})")


def _hf_tensors(hf_dir: Path):
    """(name, array) one at a time: a 1B checkpoint in float32 is 5 GB."""
    from safetensors import safe_open

    for shard in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="numpy") as tensors:
            for name in tensors.keys():
                yield name, tensors.get_tensor(name)


def _add_placeholder_vocab(writer, vocab_size: int) -> None:
    """A SentencePiece-style vocabulary of the model's size: the benchmark feeds token ids,
    never text, but llama.cpp needs one to load (with byte tokens for its newline lookup)."""
    tokens = [*SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(BYTE_TOKENS))]
    types = [CONTROL] * len(SPECIAL_TOKENS) + [BYTE] * BYTE_TOKENS
    tokens += [f"tok{i}" for i in range(len(tokens), vocab_size)]
    types += [NORMAL] * (vocab_size - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab_size)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


def _gguf_name(hf_name: str) -> str | None:
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in fixed:
        return fixed[hf_name]
    parts = hf_name.split(".")
    if parts[:2] != ["model", "layers"]:
        return None
    layer, rest = parts[2], ".".join(parts[3:])
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    return f"blk.{layer}.{per_layer[rest]}" if rest in per_layer else None


def _rotary_interleaved(weight, heads: int):
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def round_runner(gguf_path: Path, prompt: Sequence[int], decode_tokens: int) -> Callable[[], Round]:
    """The file loaded and warmed up, and one round of it: prefill `prompt`, then decode
    `decode_tokens` greedy tokens (bench.rounds.Round: prefill seconds, median step seconds)."""
    import llama_cpp
    import numpy as np

    model = llama_cpp.Llama(
        str(gguf_path),
        n_ctx=len(prompt) + decode_tokens + 16,
        n_batch=len(prompt),
        n_ubatch=len(prompt),
        n_threads=THREADS,
        n_threads_batch=THREADS,
        verbose=False,
    )
    model.eval(list(prompt[:16]))  # warm-up

    vocab = model.n_vocab()

    def next_token() -> int:
        """Greedy, from the last position's logits (copied out, as Tandem copies its own)."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(model.ctx, -1), shape=(vocab,))
        return int(np.argmax(logits.copy()))

    def one_round() -> Round:
        model.reset()
        started = time.perf_counter()
        model.eval(list(prompt))
        prefill_s = time.perf_counter() - started
        token = next_token()
        steps = []
        for _ in range(decode_tokens):
            step_started = time.perf_counter()
            model.eval([token])
            token = next_token()
            steps.append(time.perf_counter() - step_started)
        return Round(prefill_s, statistics.median(steps))

    return one_round
