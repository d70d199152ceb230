"""bench/serve.py's llama.cpp peer without building or starting it: llama-server's command line
(slots, per-slot context, threads), the build's flags per CPU, and the OpenMP wait policy the peer
gets whatever default bench/serve.py set for Tandem."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from bench.llama_server_build import AMX_FLAGS, cmake_flags, cpu_flags
from bench.llamacpp_server import context_per_slot, llama_server_command, omp_wait_policy, peer_environment

AVX2_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
AMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu avx avx2 avx512f avx512_vnni amx_tile amx_int8\n"


def _parsed(command: list[str]) -> argparse.Namespace:
    """The command read back the way llama-server's own parser reads these options."""
    parser = argparse.ArgumentParser()
    for name in ("--model", "--host", "--port", "--parallel", "--ctx-size", "--threads", "--threads-batch", "--fit"):
        parser.add_argument(name)
    for flag in ("--no-kv-unified", "--cont-batching", "--no-webui"):
        parser.add_argument(flag, action="store_true")
    return parser.parse_args(command[1:])


def test_each_of_32_slots_gets_512_tokens_of_context_and_two_threads() -> None:
    command = llama_server_command("/opt/llama-server", Path("/m/model.gguf"), 8123, 32, context_per_slot(64))
    args = _parsed(command)
    assert command[0] == "/opt/llama-server"
    assert (args.model, args.host, args.port) == ("/m/model.gguf", "127.0.0.1", "8123")
    assert int(args.parallel) == 32
    # Split (not unified) KV cache: each slot owns ctx-size / parallel tokens.
    assert args.no_kv_unified and int(args.ctx_size) // int(args.parallel) == 512
    assert (args.threads, args.threads_batch) == ("2", "2")
    assert args.cont_batching and args.no_webui and args.fit == "off"


def test_a_slot_grows_when_a_stream_asks_for_more_than_fits_beside_its_prompt() -> None:
    assert context_per_slot(32) == context_per_slot(384) == 512
    assert context_per_slot(1000) == 1128


def test_the_user_s_wait_policy_wins_over_active_and_over_tandem_s_passive() -> None:
    # bench/serve.py set PASSIVE in its environment for tandem serve after reading the user's value.
    environ = {"OMP_WAIT_POLICY": "PASSIVE", "PATH": "/bin"}
    assert peer_environment(environ, None) == {"OMP_WAIT_POLICY": "ACTIVE", "PATH": "/bin"}
    assert peer_environment(environ, "PASSIVE")["OMP_WAIT_POLICY"] == "PASSIVE"
    assert omp_wait_policy(None) == ("ACTIVE", "default")
    assert omp_wait_policy("passive") == ("passive", "user")


def test_a_native_build_except_on_amx_cpus_and_the_user_s_cmake_args_come_last() -> None:
    avx2 = cmake_flags(cpu_flags(AVX2_CPUINFO))
    assert "-DLLAMA_BUILD_SERVER=ON" in avx2 and "-DGGML_CUDA=OFF" in avx2
    assert not any(flag.startswith("-DGGML_NATIVE") for flag in avx2)

    amx = cmake_flags(cpu_flags(AMX_CPUINFO), "-DGGML_AVX512_BF16=ON -DGGML_LTO=ON")
    assert set(AMX_FLAGS) <= set(amx)
    assert "-DGGML_AVX512=ON" in amx and "-DGGML_AVX512_VNNI=ON" in amx
    assert amx[-2:] == shlex.split("-DGGML_AVX512_BF16=ON -DGGML_LTO=ON")
    assert cpu_flags("no flags here") == set()
