"""Benchmark the local engine on a SmolLM2-135M-shaped model with random weights.

Tandem (tvm backend, q4f16_1): decode tok/s (median over 128 tokens), prefill tok/s on a
256-token prompt, time to first token, compile seconds, cached load seconds (a fresh process
with a warm compile cache) and peak RSS. transformers (torch fp32) on the same weights, in the
same run. `--json` prints one JSON object as the last line."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_135M_SHAPE = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
)
PROMPT_TOKENS = 256
DECODE_TOKENS = 128
QUANTIZATION = "q4f16_1"


def prompt_ids(vocab_size: int) -> list[int]:
    import numpy as np

    return np.random.default_rng(0).integers(0, vocab_size, PROMPT_TOKENS).tolist()


def build_checkpoint(folder: Path) -> None:
    """A random SmolLM2-135M-shaped LlamaForCausalLM with a small byte-level tokenizer."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(["Tandem benchmarks a small random model."], trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**SMOLLM2_135M_SHAPE, bos_token_id=1, eos_token_id=2)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder)


def measure_tandem(model_dir: Path) -> dict[str, float]:
    """Runs in a child process so its peak RSS and start-up are Tandem's alone."""
    import numpy as np

    import tvm  # noqa: F401  (imported before the clock starts: opening is what is timed)
    from engine.loader import open_engine

    started = time.perf_counter()
    engine = open_engine(model_dir, backend="tvm")
    open_s = time.perf_counter() - started
    session = engine.session
    prompt = prompt_ids(engine.chat_config.model_config.vocab_size)
    session.reset()
    session.prefill(prompt[:16])  # warm-up: first calls allocate workspaces
    session.reset()
    started = time.perf_counter()
    logits = session.prefill(prompt)
    token = int(np.argmax(logits))
    prefill_s = time.perf_counter() - started
    steps = []
    for _ in range(DECODE_TOKENS):
        step_started = time.perf_counter()
        token = int(np.argmax(session.decode(token)))
        steps.append(time.perf_counter() - step_started)
    return {
        "open_s": open_s,
        "compile_s": engine.compile_s,
        "decode_tok_s": 1.0 / statistics.median(steps),
        "prefill_tok_s": PROMPT_TOKENS / prefill_s,
        "ttft_ms": prefill_s * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_transformers(hf_dir: Path) -> dict[str, float]:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    prompt = torch.tensor([prompt_ids(model.config.vocab_size)])
    with torch.inference_mode():
        model(prompt[:, :16])  # warm-up
        started = time.perf_counter()
        out = model(prompt, use_cache=True)
        prefill_s = time.perf_counter() - started
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        steps = []
        for _ in range(DECODE_TOKENS):
            step_started = time.perf_counter()
            out = model(token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            steps.append(time.perf_counter() - step_started)
    return {"decode_tok_s": 1.0 / statistics.median(steps), "prefill_tok_s": PROMPT_TOKENS / prefill_s}


def run_child(model_dir: Path, cache: Path) -> dict[str, float]:
    env = {**os.environ, "TANDEM_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(model_dir)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        sys.exit(f"The Tandem measurement failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Run as a script, bench/ comes first on sys.path and this file would shadow the engine package.
    sys.path[0] = str(REPO_ROOT)
    if args.child:
        print(json.dumps(measure_tandem(args.child)))
        return

    from engine.convert import convert_hf_checkpoint

    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as scratch:
        scratch = Path(scratch)
        hf_dir, mlc_dir, cache = scratch / "hf", scratch / "mlc", scratch / "cache"
        hf_dir.mkdir()
        print("building a random SmolLM2-135M-shaped checkpoint ...", flush=True)
        build_checkpoint(hf_dir)
        convert_hf_checkpoint(hf_dir, mlc_dir, QUANTIZATION)
        print(f"Tandem {QUANTIZATION}: compiling (cold cache) ...", flush=True)
        cold = run_child(mlc_dir, cache)
        print("Tandem: measuring in a fresh process with the cache warm ...", flush=True)
        warm = run_child(mlc_dir, cache)
        print("transformers fp32: measuring ...", flush=True)
        reference = measure_transformers(hf_dir)

    tandem = {
        "decode_tok_s": round(warm["decode_tok_s"], 1),
        "prefill_tok_s": round(warm["prefill_tok_s"], 1),
        "ttft_ms": round(warm["ttft_ms"], 1),
        "compile_s": round(cold["compile_s"], 2),
        "load_s": round(warm["open_s"], 3),
        "peak_rss_mb": round(warm["peak_rss_mb"], 1),
    }
    transformers_figures = {key: round(value, 1) for key, value in reference.items()}
    ratio = tandem["decode_tok_s"] / transformers_figures["decode_tok_s"]
    print()
    print(f"{'':14}{'decode tok/s':>14}{'prefill tok/s':>15}")
    print(f"{'Tandem q4':14}{tandem['decode_tok_s']:>14}{tandem['prefill_tok_s']:>15}")
    print(f"{'transformers':14}{transformers_figures['decode_tok_s']:>14}{transformers_figures['prefill_tok_s']:>15}")
    print(f"decode speed-up: {ratio:.2f}x (bar: 2x)")
    print(
        f"TTFT {tandem['ttft_ms']} ms for {PROMPT_TOKENS} tokens, compile {tandem['compile_s']} s, "
        f"cached load {tandem['load_s']} s, peak RSS {tandem['peak_rss_mb']} MB"
    )
    if args.json:
        print(json.dumps({"tandem": tandem, "transformers": transformers_figures}))


if __name__ == "__main__":
    main()
