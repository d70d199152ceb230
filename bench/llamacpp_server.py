"""llama.cpp's server as the peer of bench/serve.py: llama-cpp-python's `llama_cpp.server` (its
OpenAI-compatible FastAPI server over llama.cpp) on a GGUF, 2 threads, on a free 127.0.0.1 port.

llama-cpp-python 0.3.x has no `--n_parallel` (slots): its server holds one llama context behind a
lock, so concurrent streams queue and run one at a time (with `--interrupt_requests False`; by
default a new request cuts the streaming one short). The figures say so ("slots": 1)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

THREADS = 2
START_TIMEOUT_S = 120
SERVER_PACKAGES = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
"""What `python -m llama_cpp.server` imports (the `peer` extra of pyproject.toml)."""


def missing_server_packages() -> list[str]:
    return [name for name in SERVER_PACKAGES if importlib.util.find_spec(name) is None]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def llamacpp_server(gguf_path: Path, streams: int) -> Iterator[tuple[str, dict]]:
    """(its base URL ending in /v1, what the JSON records about it) while the server runs.
    `streams` sizes nothing (there are no slots to size) but is recorded beside them."""
    port = _free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf_path),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS),
        "--n_ctx", "2048",
        "--interrupt_requests", "False",  # queue concurrent requests instead of cutting them off
        "--logits_all", "False",  # its default computes the vocabulary logits of every prompt token
        "--verbose", "False",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            _wait_ready(process, url, log)
            yield url, {"server": "llama_cpp.server (llama-cpp-python)", "threads": THREADS, "slots": 1, "streams": streams}
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(process: subprocess.Popen, url: str, log) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"llama.cpp's server exited ({process.returncode}):\n{tail}")
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling a starting process: no state to wait on but its port
    raise SystemExit(f"llama.cpp's server did not answer within {START_TIMEOUT_S} s")
