"""Benchmark `tandem serve` under concurrent load: 1, 4, 8, 16 and 32 streams at once, each
asking for STREAM_TOKENS tokens, against a `tandem serve` process on 127.0.0.1.

Per level: aggregate tok/s (completion tokens of all streams over the wall time from the first
request to the last [DONE]), the median time to first token, and how many streams failed (a
transport error or a status other than 200). Model: the embedded tandem-nano (`--model nano`,
whose replies often stop early), a SmolLM2-135M-shaped random model (`--model 135m`, q4f16_1,
every reply runs to STREAM_TOKENS), or an MLC model directory. `--json` prints one JSON object
as the last line:
{"concurrency": [...], "tandem": {"agg_tok_s": [...], "p50_ttft_ms": [...], "errors": [...]}}"""

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
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
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


async def one_stream(client, url: str, prompt: str) -> tuple[float | None, int]:
    """(seconds to the first token's chunk, completion tokens); raises on any failure."""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": STREAM_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,  # a chunk for every token, even one whose text is held back or empty
    }
    started = time.perf_counter()
    first, tokens = None, 0
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with client.stream("POST", url + "/chat/completions", json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0].get("logprobs"):
                first = time.perf_counter() - started
    return first, tokens


async def level(url: str, streams: int) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(one_stream(client, url, PROMPTS[i % len(PROMPTS)]) for i in range(streams)), return_exceptions=True
        )
        wall = time.perf_counter() - started
    good = [r for r in results if not isinstance(r, BaseException)]
    ttfts = [first for first, _ in good if first is not None]
    return {
        "agg_tok_s": round(sum(tokens for _, tokens in good) / wall, 1),
        "p50_ttft_ms": round(statistics.median(ttfts) * 1000, 1) if ttfts else None,
        "errors": len(results) - len(good),
    }


def measure(url: str) -> dict:
    asyncio.run(level(url, 1))  # warm-up: first-call costs out of the figures
    figures = [asyncio.run(level(url, streams)) for streams in LEVELS]
    return {key: [f[key] for f in figures] for key in ("agg_tok_s", "p50_ttft_ms", "errors")}


def model_dir_for(choice: str, scratch: Path) -> Path:
    if choice == "nano":
        import assets

        return assets.embedded_model_dir()
    if choice == "135m":
        from bench.engine import QUANTIZATION, SHAPES, build_checkpoint
        from engine.convert import convert_hf_checkpoint

        hf_dir, mlc_dir = scratch / "hf", scratch / "mlc"
        hf_dir.mkdir()
        print("building a random 135m-shaped checkpoint ...", flush=True)
        build_checkpoint(hf_dir, SHAPES["135m"])
        convert_hf_checkpoint(hf_dir, mlc_dir, QUANTIZATION)
        return mlc_dir
    return Path(choice)


def peer_note(peer: str | None) -> str | None:
    if peer != "llamacpp":
        return None
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return (
            "llama-cpp-python is not installed (it builds llama.cpp from source, about 10 minutes on "
            "2 cores; see bench/llamacpp_peer.py): the llama.cpp server was not measured"
        )
    return "driving llama.cpp's server (--parallel slots) is not written yet: the llama.cpp server was not measured"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--model", default="nano", help="nano (default), 135m, or an MLC model directory")
    parser.add_argument("--batch", type=int, default=max(LEVELS), help="the server's --batch (default 32)")
    parser.add_argument("--peer", choices=["llamacpp"], help="also measure llama.cpp's server (not available yet)")
    args = parser.parse_args()
    sys.path[0] = str(REPO_ROOT)  # run as a script, bench/ would come first and shadow `engine`
    note = peer_note(args.peer)
    if note:
        print(f"--peer llamacpp: {note}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tandem-bench-serve-") as scratch:
        model_dir = model_dir_for(args.model, Path(scratch))
        print(f"starting tandem serve on {model_dir.name} (batch {args.batch}) ...", flush=True)
        process, url = start_server(model_dir, args.batch)
        try:
            tandem = measure(url)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    result: dict = {"concurrency": list(LEVELS), "model": args.model, "stream_tokens": STREAM_TOKENS, "tandem": tandem}
    if note:
        result["llamacpp"] = {"skipped": note}
    for index, streams in enumerate(LEVELS):
        print(
            f"{streams:3d} streams: {tandem['agg_tok_s'][index]:8.1f} tok/s  "
            f"p50 TTFT {tandem['p50_ttft_ms'][index]} ms  errors {tandem['errors'][index]}"
        )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
