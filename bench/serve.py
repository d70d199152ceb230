"""Benchmark `tandem serve` under concurrent load: 1, 4, 8, 16 and 32 streams at once, each
asking for STREAM_TOKENS tokens (`--tokens`), against a `tandem serve` process on 127.0.0.1, and
with `--peer llamacpp` against llama.cpp's own `llama-server` on the same GGUF, with one slot per
stream (`--parallel` = `--batch`) and the same 2 threads (bench/llamacpp_server.py; it is built
once from the llama.cpp that llama-cpp-python vendors, bench/llama_server_build.py), or with
`--peer-server llama-cpp-python` against llama-cpp-python's server, which has no slots.

Per level: aggregate tok/s (completion tokens of all streams over the wall time from the first
request to the last [DONE]), the median time to first token, and how many streams failed (a
transport error or a status other than 200). Model: the embedded tandem-nano (`--model nano`,
whose replies often stop early), a SmolLM2-135M-shaped random model (`--model 135m`, q4f16_1,
every reply runs to STREAM_TOKENS), SmolLM2-135M-Instruct's Q4_1 GGUF (`--model smollm2`, run as
it is; the default with `--peer llamacpp`), a .gguf file, or an MLC model directory. `--json`
prints one JSON object as the last line:
{"concurrency": [...], "tandem": {"agg_tok_s": [...], "p50_ttft_ms": [...], "errors": [...]},
 "llamacpp": {...the same keys...}, "peer": {"server", "binary", "commit", "slots", "threads", ...}}"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
"""The user's choice, read before main sets PASSIVE for tandem serve: llama.cpp gets it, else ACTIVE."""
LEVELS = (1, 4, 8, 16, 32)
STREAM_TOKENS = 32
TOKEN = "bench-serve-token"
START_TIMEOUT_S = 600
"""A first start compiles the model for this machine: minutes for the 135M shape on 2 cores."""
PROMPTS = (
    "How do I start a new conversation?",
    "What does privacy mode do?",
    "Tell me about Tandem.",
    "How do I search my history?",
)


def start_server(model_dir: Path, batch: int) -> tuple[subprocess.Popen, str]:
    from bench.serve_process import start_tandem_serve

    extra = ["--token", TOKEN, "--batch", str(batch), "--queue", str(4 * max(LEVELS))]
    return start_tandem_serve(model_dir, extra, START_TIMEOUT_S)


@dataclass(frozen=True)
class Target:
    """A server to drive: its base URL, request headers, and whether to ask for logprobs
    (tandem: then every token has a chunk, even one whose text is held back)."""

    url: str
    headers: dict[str, str]
    logprobs: bool


async def one_stream(client, target: Target, prompt: str, max_tokens: int) -> tuple[float | None, int]:
    """(seconds to the first token's chunk, completion tokens); raises on any failure. Tokens
    come from the final usage chunk, else (a server that sends none) one per content chunk."""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if target.logprobs:
        body["logprobs"] = True
    started = time.perf_counter()
    first, usage, chunks = None, None, 0
    async with client.stream("POST", target.url + "/chat/completions", json=body, headers=target.headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            choice = chunk["choices"][0] if chunk.get("choices") else {}
            if choice.get("logprobs") or (choice.get("delta") or {}).get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - started
    return first, usage if usage is not None else chunks


async def level(target: Target, streams: int, max_tokens: int) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(one_stream(client, target, PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(streams)),
            return_exceptions=True,
        )
        wall = time.perf_counter() - started
    good = [r for r in results if not isinstance(r, BaseException)]
    ttfts = [first for first, _ in good if first is not None]
    return {
        "agg_tok_s": round(sum(tokens for _, tokens in good) / wall, 1),
        "p50_ttft_ms": round(statistics.median(ttfts) * 1000, 1) if ttfts else None,
        "errors": len(results) - len(good),
    }


def measure(target: Target, levels: tuple[int, ...], max_tokens: int) -> dict:
    asyncio.run(level(target, 1, max_tokens))  # warm-up: first-call costs out of the figures
    figures = [asyncio.run(level(target, streams, max_tokens)) for streams in levels]
    return {key: [f[key] for f in figures] for key in ("agg_tok_s", "p50_ttft_ms", "errors")}


def model_dir_for(choice: str, scratch: Path) -> tuple[Path, Path | None]:
    """(the model directory tandem serves, the GGUF file it runs or None)."""
    if choice == "nano":
        import assets

        return assets.embedded_model_dir(), None
    if choice == "135m":
        from bench.engine import QUANTIZATION, SHAPES, build_checkpoint
        from engine.convert import convert_hf_checkpoint

        hf_dir, mlc_dir = scratch / "hf", scratch / "mlc"
        hf_dir.mkdir()
        print("building a random 135m-shaped checkpoint ...", flush=True)
        build_checkpoint(hf_dir, SHAPES["135m"])
        convert_hf_checkpoint(hf_dir, mlc_dir, QUANTIZATION)
        return mlc_dir, None
    if choice == "smollm2" or choice.endswith(".gguf"):
        from bench.engine import import_gguf_for_bench
        from bench.int8_accuracy import BenchError, smollm2_gguf

        try:
            gguf_path = smollm2_gguf() if choice == "smollm2" else Path(choice).expanduser().resolve()
        except BenchError as problem:
            raise SystemExit(str(problem)) from None
        if not gguf_path.is_file():
            raise SystemExit(f"{gguf_path} is not a file; pass the path of a .gguf file to --model.")
        return import_gguf_for_bench(gguf_path, scratch)[0], gguf_path
    return Path(choice), None


def print_rows(name: str, levels: tuple[int, ...], figures: dict) -> None:
    for index, streams in enumerate(levels):
        print(
            f"{name:9s} {streams:3d} streams: {figures['agg_tok_s'][index]:8.1f} tok/s  "
            f"p50 TTFT {figures['p50_ttft_ms'][index]} ms  errors {figures['errors'][index]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument(
        "--model", help="nano, 135m, smollm2 (the default with --peer), a .gguf file or an MLC model directory"
    )
    parser.add_argument("--batch", type=int, default=max(LEVELS), help="the server's --batch (default 32)")
    parser.add_argument("--tokens", type=int, default=STREAM_TOKENS, help=f"tokens per stream (default {STREAM_TOKENS})")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrent streams, comma-separated")
    parser.add_argument("--peer", choices=["llamacpp"], help="also measure llama.cpp's server on the same GGUF")
    parser.add_argument(
        "--peer-server",
        choices=["llama-server", "llama-cpp-python"],
        default="llama-server",
        help="llama.cpp's own server with --parallel slots (the default; built on first use), or llama-cpp-python's",
    )
    args = parser.parse_args()
    sys.path[0] = str(REPO_ROOT)  # run as a script, bench/ would come first and shadow `engine`
    levels = tuple(int(n) for n in args.levels.split(","))
    model = args.model or ("smollm2" if args.peer else "nano")
    if args.peer:
        from bench.llamacpp_server import missing_server_packages

        missing = missing_server_packages(args.peer_server)
        if missing:
            raise SystemExit(f"--peer llamacpp needs {', '.join(missing)}: pip install -e '.[peer]'")
        if args.peer_server == "llama-server":
            from bench.llama_server_build import ensure_llama_server

            ensure_llama_server()  # before Tandem's figures: the first build takes minutes
    with tempfile.TemporaryDirectory(prefix="tandem-bench-serve-") as scratch:
        model_dir, gguf_path = model_dir_for(model, Path(scratch))
        if args.peer and gguf_path is None:
            raise SystemExit("--peer llamacpp runs both servers on one GGUF: use --model smollm2 or --model FILE.gguf.")
        print(f"starting tandem serve on {model_dir.name} (batch {args.batch}) ...", flush=True)
        process, url = start_server(model_dir, args.batch)
        try:
            tandem = measure(Target(url, {"authorization": f"Bearer {TOKEN}"}, logprobs=True), levels, args.tokens)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        peer, peer_info = None, {}
        if args.peer:
            from bench.llamacpp_server import llamacpp_server

            print(f"starting {args.peer_server} on {gguf_path.name} ...", flush=True)
            server = llamacpp_server(gguf_path, args.batch, args.tokens, USER_OMP_WAIT_POLICY, args.peer_server)
            with server as (peer_url, peer_info):
                peer = measure(Target(peer_url, {}, logprobs=False), levels, args.tokens)
    result: dict = {
        "concurrency": list(levels),
        "model": model,
        "stream_tokens": args.tokens,
        "tandem": tandem,
    }
    if peer is not None:
        result["llamacpp"] = peer
        result["peer"] = peer_info
    print_rows("tandem", levels, tandem)
    if peer is not None:
        print_rows("llama.cpp", levels, peer)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
