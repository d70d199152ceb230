"""llama.cpp's server as the peer of bench/serve.py, on the same GGUF, on a free 127.0.0.1 port,
with the same 2 threads as Tandem, driven through its OpenAI-compatible streaming endpoint.

Two servers: llama.cpp's own `llama-server` (the default; bench/llama_server_build.py builds it
from the llama.cpp that llama-cpp-python vendors), with one slot per stream (`--parallel`, as many
as tandem serve's `--batch`) and 512 tokens of context per slot; or, as a fallback,
llama-cpp-python's `llama_cpp.server`, which has no slots: one llama context behind a lock, so
concurrent streams queue and run one at a time ("slots": 1 in the JSON).

llama.cpp's OpenMP threads spin between ops: both run with OMP_WAIT_POLICY=ACTIVE unless the
user chose a policy (bench/engine.py measured 2-3x slower decoding when they sleep); the JSON
records which."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

THREADS = 2
CTX_PER_SLOT = 512
PROMPT_ROOM = 128
"""Context a slot keeps for the chat-templated prompt beyond the tokens it generates."""
START_TIMEOUT_S = 120
SERVERS = ("llama-server", "llama-cpp-python")
SERVER_PACKAGES = {
    "llama-server": ("llama_cpp",),  # its version picks the llama.cpp sources to build
    "llama-cpp-python": ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"),
}
"""What each server needs installed (the `peer` extra of pyproject.toml)."""


def missing_server_packages(server: str = "llama-server") -> list[str]:
    return [name for name in SERVER_PACKAGES[server] if importlib.util.find_spec(name) is None]


def context_per_slot(stream_tokens: int) -> int:
    """512 tokens, or more when a stream asks for more than fits beside its prompt."""
    return max(CTX_PER_SLOT, stream_tokens + PROMPT_ROOM)


def llama_server_command(binary: str, gguf_path: Path, port: int, slots: int, ctx_per_slot: int) -> list[str]:
    """llama-server's command line: `slots` slots of `ctx_per_slot` tokens each (a slot gets
    -c / --parallel, the KV cache being split, not unified), continuous batching, THREADS threads
    for decoding and prefill, no web UI."""
    return [
        binary,
        "--model", str(gguf_path),
        "--host", "127.0.0.1", "--port", str(port),
        "--parallel", str(slots), "--ctx-size", str(slots * ctx_per_slot), "--no-kv-unified",
        "--cont-batching",
        "--threads", str(THREADS), "--threads-batch", str(THREADS),
        "--fit", "off",  # keep the context asked for: there is no device memory to fit
        "--no-webui",
    ]  # fmt: skip


def llama_cpp_python_command(gguf_path: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf_path),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS),
        "--n_ctx", "2048",
        "--interrupt_requests", "False",  # queue concurrent requests instead of cutting them off
        "--logits_all", "False",  # its default computes the vocabulary logits of every prompt token
        "--verbose", "False",
    ]  # fmt: skip


def omp_wait_policy(user_policy: str | None) -> tuple[str, str]:
    """(the policy the peer runs with, "user" or "default")."""
    return (user_policy, "user") if user_policy else ("ACTIVE", "default")


def peer_environment(environ: Mapping[str, str], user_policy: str | None) -> dict[str, str]:
    """The caller's environment with the peer's OMP_WAIT_POLICY. `user_policy` is the value the
    user started with: the caller may have set its own default for Tandem since."""
    return {**environ, "OMP_WAIT_POLICY": omp_wait_policy(user_policy)[0]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def llamacpp_server(
    gguf_path: Path,
    slots: int,
    stream_tokens: int,
    user_omp_policy: str | None,
    server: str = "llama-server",
) -> Iterator[tuple[str, dict]]:
    """(its base URL ending in /v1, what the JSON records about it) while the server runs."""
    port = _free_port()
    policy, policy_from = omp_wait_policy(user_omp_policy)
    info: dict = {"server": server, "threads": THREADS, "omp_wait_policy": policy, "omp_wait_policy_from": policy_from}
    if server == "llama-server":
        from bench.llama_server_build import ensure_llama_server

        built = ensure_llama_server()
        ctx = context_per_slot(stream_tokens)
        command = llama_server_command(built.binary, gguf_path, port, slots, ctx)
        health = "/health"
        info |= {"binary": built.binary, "commit": built.commit, "llama_cpp_python": built.version, "slots": slots, "ctx_per_slot": ctx}
    else:
        command = llama_cpp_python_command(gguf_path, port)
        health = "/v1/models"
        info |= {"slots": 1}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=peer_environment(os.environ, user_omp_policy))
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(process, base + health, log)
            yield base + "/v1", info
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(process: subprocess.Popen, health_url: str, log) -> None:
    """Until `health_url` answers 200 (llama-server answers 503 while it loads the model)."""
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"llama.cpp's server exited ({process.returncode}):\n{tail}")
        try:
            if httpx.get(health_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling a starting process: no state to wait on but its port
    raise SystemExit(f"llama.cpp's server did not answer within {START_TIMEOUT_S} s")
