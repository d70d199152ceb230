"""Benchmark the local engine on a SmolLM2-135M-shaped model with random weights (or the
Llama-3.2-1B shape with `--shape 1b`).

Tandem (tvm backend, q4f16_1): decode tok/s (median step over 128 tokens), prefill tok/s on a
256-token prompt (each the median of `--rounds` rounds; Tandem and llama.cpp take their rounds in
turns, each in a worker process of its own, see bench/rounds.py), time to first token,
compile seconds, first and cached load seconds (a fresh process with a cold, then a warm cache)
and peak RSS; the measured memory bandwidth, the bytes of weights read per decoded token and
decode as a fraction of that bound. transformers (torch fp32) on the same weights, in the same
run, and with `--peer llamacpp` llama.cpp (Q4_0, 2 threads). `--profile` prints where decode and
prefill spend their time, per compiled function. `--cpu-matmul int8` measures the int8-activation
kernels (TANDEM_CPU_MATMUL). `--gguf PATH` runs that GGUF file instead, as it is (imported by
engine.gguf, each tensor in its own block format; transformers and llama.cpp read the same file)
and adds "gguf": {"file", "tensor_types"} to the JSON. With `--peer`, "vs_llamacpp" holds the
median of the per-round ratios and their range. `--quant q4_k_m` writes the random
weights as a Q4_K_M GGUF with llama.cpp's own quantizer (the peer extra) and runs that file as
`--gguf` does. `--json` prints one JSON object as the last line."""

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.rounds import Worker

REPO_ROOT = Path(__file__).resolve().parent.parent
# Before torch loads: with OpenMP's default busy-waiting, torch decodes about 10x slower on a
# loaded two-core machine; passive waiting gives transformers its best figure here.
USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
SHAPES = {
    "135m": dict(  # SmolLM2-135M
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
    ),
    "1b": dict(  # Llama-3.2-1B (plain RoPE: the scaling does not change the cost)
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
}
PROFILE_DECODE_STEPS = 32
PROMPT_TOKENS = 256
DECODE_TOKENS = 128
QUANTIZATION = "q4f16_1"
ROUNDS = 7
"""Rounds per engine by default (--rounds); transformers, far slower, takes REFERENCE_ROUNDS."""
REFERENCE_ROUNDS = 3


def prompt_ids(vocab_size: int) -> list[int]:
    import numpy as np

    return np.random.default_rng(0).integers(0, vocab_size, PROMPT_TOKENS).tolist()


def build_checkpoint(folder: Path, shape: dict) -> None:
    """A random LlamaForCausalLM of `shape` with a small byte-level tokenizer."""
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
    config = transformers.LlamaConfig(**shape, bos_token_id=1, eos_token_id=2)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder)


def tandem_child(model_dir: Path, profile: bool, cold: bool) -> None:
    """A child process, so that its peak RSS and start-up are Tandem's alone. Cold: open the
    model (compiling it) and report; else serve rounds (bench.rounds) until told to finish."""
    import numpy as np

    import tvm  # noqa: F401  (imported before the clock starts: opening is what is timed)
    from bench.bandwidth import measure_read_gb_s
    from bench.rounds import Round, serve_rounds
    from engine.loader import open_engine

    started = time.perf_counter()
    engine = open_engine(model_dir, backend="tvm")
    opened = {"open_s": time.perf_counter() - started, "compile_s": engine.compile_s, "device": engine.info.device}
    if cold:
        print(json.dumps({**opened, "bandwidth_gb_s": measure_read_gb_s()}))
        return
    session = engine.session
    prompt = prompt_ids(engine.chat_config.model_config.vocab_size)
    session.reset()
    session.prefill(prompt[:16])  # warm-up: first calls allocate workspaces

    def one_round() -> Round:
        session.reset()
        started = time.perf_counter()
        token = int(np.argmax(session.prefill(prompt)))
        prefill_s = time.perf_counter() - started
        steps = []
        for _ in range(DECODE_TOKENS):
            step_started = time.perf_counter()
            token = int(np.argmax(session.decode(token)))
            steps.append(time.perf_counter() - step_started)
        return Round(prefill_s, statistics.median(steps))

    def finish() -> dict:
        figures = {"peak_rss_mb": peak_rss_mb(), "bandwidth_gb_s": measure_read_gb_s()}
        if profile:
            figures["profile"] = kernel_profile(session, prompt)
        return figures

    serve_rounds(one_round, opened, finish)


def kernel_profile(session, prompt: list[int]) -> dict[str, list[tuple[str, float, int]]]:
    """Per phase, (function, milliseconds per prefill or per decoded token, calls per pass),
    slowest first, timed around each call the relax VM makes (attention runs inside the KV
    cache's builtin). The Python hook adds a few microseconds per call."""
    import numpy as np

    phases = {}
    # the benchmark looks inside the session; nothing else should
    with vm_call_times(session._vm) as totals:
        session.reset()
        totals.clear()
        token = int(np.argmax(session.prefill(prompt)))
        phases["prefill"] = _per_pass(totals, 1)
        totals.clear()
        for _ in range(PROFILE_DECODE_STEPS):
            token = int(np.argmax(session.decode(token)))
        phases["decode"] = _per_pass(totals, PROFILE_DECODE_STEPS)
    return phases


@contextmanager
def vm_call_times(vm, clock: Callable[[], float] = time.perf_counter) -> Iterator[dict[str, list[float]]]:
    """While inside: {function: [seconds, calls]} for each call the relax VM makes (attention runs
    inside the KV cache's builtin). The Python hook adds a few microseconds per call. `clock`:
    wall time by default; time.process_time counts only this process's CPU time (on a busy
    machine, with TVM_NUM_THREADS=1, what each function costs whatever else runs)."""
    totals: dict[str, list[float]] = {}
    started: list[float] = []

    def instrument(func, symbol, before_run, ret_value, *args):
        if before_run:
            started.append(clock())
        else:
            entry = totals.setdefault(str(symbol), [0.0, 0])
            entry[0] += clock() - started.pop()
            entry[1] += 1
        return 0

    vm.set_instrument(instrument)
    try:
        yield totals
    finally:
        vm.set_instrument(None)


def _per_pass(totals: dict[str, list[float]], passes: int) -> list[tuple[str, float, int]]:
    rows = [(name, seconds * 1000 / passes, calls // passes) for name, (seconds, calls) in totals.items()]
    return sorted(rows, key=lambda row: -row[1])


def weight_bytes_per_token(cache: Path) -> int:
    """Bytes of the compiled model's parameters one decode step reads: all but the embedding
    table, of which it gathers one row (a tied head has its own tiled copy, read in full)."""
    import numpy as np

    (manifest,) = cache.glob("libs/*/manifest.json")
    total = 0
    for name, shape, dtype in json.loads(manifest.read_text())["params"]:
        if not name.startswith("model.embed_tokens"):
            total += int(np.prod(shape)) * np.dtype(dtype).itemsize
    return total


def peak_rss_mb() -> float:
    """This process's peak resident set. VmHWM belongs to the process image; ru_maxrss would
    report the forking parent's peak when that was larger."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def measure_transformers(source: Path) -> dict[str, float]:
    """transformers fp32 on a checkpoint folder, or on a GGUF file (which it dequantizes)."""
    import torch
    import transformers

    from bench.rounds import Round, median_round

    if source.suffix == ".gguf":
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
    else:
        loaded = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model = loaded.eval()
    prompt = torch.tensor([prompt_ids(model.config.vocab_size)])

    def one_round() -> Round:
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
        return Round(prefill_s, statistics.median(steps))

    with torch.inference_mode():
        model(prompt[:, :16])  # warm-up
        median = median_round([one_round() for _ in range(REFERENCE_ROUNDS)])
    return {"decode_tok_s": 1.0 / median.step_s, "prefill_tok_s": PROMPT_TOKENS / median.prefill_s}


def child_env(cache: Path | None = None, passive_omp: bool = True) -> dict[str, str]:
    """A child's environment: peak RSS, thread pools and start-up stay its own. llama.cpp's
    OpenMP threads spin (ACTIVE, unless the user chose a policy): let sleep between its hundreds
    of ops per token, it decoded 2-3x slower here."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    if not passive_omp:
        env["OMP_WAIT_POLICY"] = USER_OMP_WAIT_POLICY or "ACTIVE"
    if cache is not None:
        env["TANDEM_CACHE_DIR"] = str(cache)
    return env


def run_child(what: str, *arguments: str, cache: Path | None = None) -> dict:
    """One measurement in a fresh process (`what` names it in an error)."""
    result = subprocess.run(
        [sys.executable, __file__, *arguments], env=child_env(cache), capture_output=True, text=True, check=False
    )
    if result.returncode:
        from bench.rounds import process_ending

        sys.exit(f"The {what} measurement failed ({process_ending(result.returncode)}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_worker(what: str, *arguments: str, cache: Path | None = None, passive_omp: bool = True) -> Worker:
    from bench.rounds import Worker

    return Worker(what, [sys.executable, __file__, *arguments], child_env(cache, passive_omp))


def start_peer(hf_dir: Path | None, scratch: Path, gguf_path: Path | None = None, vocab: int = 0) -> Worker | None:
    """llama.cpp's worker on the same weights (the random checkpoint written as Q4_0, or
    `gguf_path` as it is), or None (saying how to install it) when it is absent."""
    from bench import llamacpp_peer

    missing = llamacpp_peer.missing_packages()
    if missing:
        print(f"llama.cpp peer skipped: {', '.join(missing)} not installed. Install it with:")
        print("  " + llamacpp_peer.INSTALL_HINT)
        return None
    if gguf_path is None:
        assert hf_dir is not None
        print("llama.cpp Q4_0: writing the GGUF and loading it ...", flush=True)
        gguf_path = scratch / "model-q4_0.gguf"
        llamacpp_peer.write_gguf(hf_dir, gguf_path)
        vocab = _vocab_size(hf_dir)
    else:
        print(f"llama.cpp: loading {gguf_path.name} ...", flush=True)
    arguments = ("--peer-child", str(gguf_path), "--vocab", str(vocab))
    return start_worker("llama.cpp", *arguments, passive_omp=False)


def import_gguf_for_bench(gguf_path: Path, scratch: Path) -> tuple[Path, dict]:
    """A Tandem model directory running the file in place, and the JSON's "gguf" entry."""
    from engine.gguf.importer import import_gguf

    print(f"importing {gguf_path.name} (as stored, no re-quantizing) ...", flush=True)
    result = import_gguf(gguf_path, scratch / "gguf-model")
    print(f"  {result.route}", flush=True)
    return result.out_dir, {"file": gguf_path.name, "tensor_types": dict(result.tensor_types)}


def write_quantized_gguf(hf_dir: Path, scratch: Path, shape: dict) -> Path:
    """The random checkpoint of `shape` as a Q4_K_M GGUF, quantized by llama.cpp (via an F16 file,
    deleted after), for both engines to run as it is."""
    from bench import llamacpp_peer

    missing = llamacpp_peer.missing_packages()
    if missing:
        sys.exit(f"--quant needs {', '.join(missing)}; install it with:\n  {llamacpp_peer.INSTALL_HINT}")
    hf_dir.mkdir()
    print("building a random checkpoint and writing it as Q4_K_M with llama.cpp's quantizer ...", flush=True)
    build_checkpoint(hf_dir, shape)
    f16_path, out_path = scratch / "model-f16.gguf", scratch / "model-q4_k_m.gguf"
    llamacpp_peer.write_gguf(hf_dir, f16_path, matrices="F16")
    llamacpp_peer.quantize_q4_k_m(f16_path, out_path)
    f16_path.unlink()
    return out_path


def _vocab_size(hf_dir: Path) -> int:
    return json.loads((hf_dir / "config.json").read_text())["vocab_size"]


def print_profile(profile: dict[str, list], top: int = 12) -> None:
    for phase, rows in profile.items():
        total = sum(ms for _, ms, _ in rows)
        unit = f"per {PROMPT_TOKENS}-token prefill" if phase == "prefill" else "per decoded token"
        print(f"\n{phase} profile: {total:.2f} ms {unit} inside VM calls")
        for name, ms, calls in rows[:top]:
            print(f"  {ms:9.3f} ms {100 * ms / total:5.1f}%  {calls:4d} calls  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="135m", help="model shape (default 135m)")
    parser.add_argument("--peer", choices=["llamacpp"], help="also measure llama.cpp on the same weights")
    parser.add_argument("--profile", action="store_true", help="print time per compiled function")
    parser.add_argument(
        "--cpu-matmul",
        choices=["float", "int8"],
        help="how Tandem's 4-bit linear layers compute (default: $TANDEM_CPU_MATMUL, else int8 on an AVX2, AVX-VNNI or AVX512-VNNI CPU)",
    )
    parser.add_argument("--gguf", type=Path, help="benchmark this GGUF file (as it is) instead of a random model")
    parser.add_argument(
        "--quant",
        choices=["q4_k_m"],
        help="write the random weights as a GGUF of this type with llama.cpp's quantizer and run it as --gguf does",
    )
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"rounds per engine, taken in turns (default {ROUNDS})"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peer-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.quant and args.gguf:
        parser.error("--quant writes its own GGUF of the random weights; leave out --gguf, or --quant to run a file")
    if args.cpu_matmul:
        os.environ["TANDEM_CPU_MATMUL"] = args.cpu_matmul  # the Tandem children inherit it
    # Run as a script, bench/ comes first on sys.path and this file would shadow the engine package.
    sys.path[0] = str(REPO_ROOT)
    if args.child:
        tandem_child(args.child, args.profile, args.cold)
        return
    if args.peer_child:
        from bench import llamacpp_peer
        from bench.rounds import serve_rounds

        one_round = llamacpp_peer.round_runner(args.peer_child, prompt_ids(args.vocab), DECODE_TOKENS)
        serve_rounds(one_round, {}, dict)
        return
    from bench.rounds import alternate, median_round, paired_ratios

    from engine.convert import convert_hf_checkpoint

    gguf_entry: dict | None = None
    quantization = QUANTIZATION
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as scratch:
        scratch = Path(scratch)
        hf_dir, mlc_dir, cache = scratch / "hf", scratch / "mlc", scratch / "cache"
        if args.quant:
            gguf_path = write_quantized_gguf(hf_dir, scratch, SHAPES[args.shape])
            args.gguf = gguf_path
        if args.gguf:
            gguf_path = args.gguf.expanduser().resolve()
            if not gguf_path.is_file():
                sys.exit(f"{gguf_path} is not a file; pass the path of a .gguf file to --gguf.")
            mlc_dir, gguf_entry = import_gguf_for_bench(gguf_path, scratch)
            quantization = "gguf"
        else:
            hf_dir.mkdir()
            print(f"building a random {args.shape}-shaped checkpoint ...", flush=True)
            build_checkpoint(hf_dir, SHAPES[args.shape])
            convert_hf_checkpoint(hf_dir, mlc_dir, QUANTIZATION)
        print(f"Tandem {quantization}: compiling (cold cache) ...", flush=True)
        cold = run_child("Tandem", "--child", str(mlc_dir), "--cold", cache=cache)
        print("Tandem: loading in a fresh process with the cache warm ...", flush=True)
        warm_arguments = ("--child", str(mlc_dir), *(["--profile"] if args.profile else []))
        workers = {"tandem": start_worker("Tandem", *warm_arguments, cache=cache)}
        bytes_per_token = weight_bytes_per_token(cache)
        if args.peer:
            vocab = json.loads((mlc_dir / "mlc-chat-config.json").read_text())["vocab_size"]
            peer = start_peer(None, scratch, gguf_path, vocab) if args.gguf else start_peer(hf_dir, scratch)
            if peer is not None:
                workers["llamacpp"] = peer
        print(f"{args.rounds} rounds of {' and '.join(workers)}, in turns ...", flush=True)
        rounds = alternate(workers, args.rounds)
        finished = {name: worker.finish() for name, worker in workers.items()}
        print("transformers fp32: measuring ...", flush=True)
        reference = measure_transformers(gguf_path if args.gguf else hf_dir)

    warm = {**workers["tandem"].ready, **finished["tandem"]}
    median = median_round(rounds["tandem"])
    tandem = {
        "decode_tok_s": round(1.0 / median.step_s, 1),
        "prefill_tok_s": round(PROMPT_TOKENS / median.prefill_s, 1),
        "ttft_ms": round(median.prefill_s * 1000, 1),
        "compile_s": round(cold["compile_s"], 2),
        "cold_load_s": round(cold["open_s"], 3),
        "load_s": round(warm["open_s"], 3),
        "peak_rss_mb": round(warm["peak_rss_mb"], 1),
    }
    transformers_figures = {key: round(value, 1) for key, value in reference.items()}
    on_cpu = str(warm["device"]).startswith("cpu")
    bandwidth = max(cold["bandwidth_gb_s"], warm["bandwidth_gb_s"])
    bound_tok_s = bandwidth * 1e9 / bytes_per_token
    roofline = {
        "bandwidth_gb_s": round(bandwidth, 1),
        "weight_mb_per_token": round(bytes_per_token / 1e6, 1),
        "bound_tok_s": round(bound_tok_s, 1),
        "decode_fraction_of_bound": round(tandem["decode_tok_s"] / bound_tok_s, 3),
    }
    if args.profile:
        print_profile(warm["profile"])
    from engine.tvm_backend.target import cpu_target

    matmul = cpu_target().cpu_matmul  # what the children ran: the setting, or the default for this CPU
    print()
    if gguf_entry is not None:
        types = ", ".join(f"{count} {name}" for name, count in gguf_entry["tensor_types"].items())
        print(f"{gguf_entry['file']} ({types}), the same file in every engine")
    else:
        print(f"shape {args.shape}, {QUANTIZATION} (llama.cpp: Q4_0)")
    print(f"Tandem on {warm['device']}; medians of {args.rounds} rounds")
    print(f"{'':14}{'decode tok/s':>14}{'prefill tok/s':>15}")
    tandem_label = "Tandem gguf" if gguf_entry is not None else "Tandem q4"
    print(f"{tandem_label:14}{tandem['decode_tok_s']:>14}{tandem['prefill_tok_s']:>15}")
    print(f"{'transformers':14}{transformers_figures['decode_tok_s']:>14}{transformers_figures['prefill_tok_s']:>15}")
    result = {
        "shape": "gguf" if gguf_entry is not None else args.shape,
        "device": warm["device"],
        "cpu_matmul": matmul,
        "rounds": args.rounds,
        "tandem": tandem,
        "transformers": transformers_figures,
    }
    if on_cpu:
        result["roofline"] = roofline
    if gguf_entry is not None:
        result["gguf"] = gguf_entry
    if "llamacpp" in rounds:
        from bench.llamacpp_peer import THREADS

        peer_median = median_round(rounds["llamacpp"])
        result["llamacpp"] = {
            "decode_tok_s": round(1.0 / peer_median.step_s, 1),
            "prefill_tok_s": round(PROMPT_TOKENS / peer_median.prefill_s, 1),
            "threads": THREADS,
        }
        ratios = paired_ratios(rounds["tandem"], rounds["llamacpp"])
        result["vs_llamacpp"] = {
            "decode": round(ratios.decode, 3),
            "prefill": round(ratios.prefill, 3),
            "decode_range": [round(value, 3) for value in ratios.decode_range],
            "prefill_range": [round(value, 3) for value in ratios.prefill_range],
        }
        peer_label = "llama.cpp" if gguf_entry is not None else "llama.cpp Q4_0"
        print(f"{peer_label:14}{result['llamacpp']['decode_tok_s']:>14}{result['llamacpp']['prefill_tok_s']:>15}")
        print(
            f"vs llama.cpp ({THREADS} threads), median of the rounds' ratios: decode {ratios.decode:.2f}x "
            f"({ratios.decode_range[0]:.2f}-{ratios.decode_range[1]:.2f}), prefill {ratios.prefill:.2f}x "
            f"({ratios.prefill_range[0]:.2f}-{ratios.prefill_range[1]:.2f}) (bar: 1.0x)"
        )
    ratio = tandem["decode_tok_s"] / transformers_figures["decode_tok_s"]
    print(f"decode vs transformers: {ratio:.2f}x (bar: 2x)")
    if on_cpu:
        print(
            f"memory bandwidth {roofline['bandwidth_gb_s']} GB/s, {roofline['weight_mb_per_token']} MB "
            f"of weights per token: bound {roofline['bound_tok_s']} tok/s, Tandem decode at "
            f"{100 * roofline['decode_fraction_of_bound']:.0f}% of it"
        )
    print(
        f"TTFT {tandem['ttft_ms']} ms for {PROMPT_TOKENS} tokens, compile {tandem['compile_s']} s, "
        f"first load {tandem['cold_load_s']} s (compile, verify, repack), cached load {tandem['load_s']} s, "
        f"peak RSS {tandem['peak_rss_mb']} MB"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
