"""Builds llama.cpp's own `llama-server` for bench/serve.py's peer, from the llama.cpp sources
vendored in llama-cpp-python's sdist of the installed version: the server and llama-cpp-python
(bench/engine.py's peer) then run one llama.cpp commit.

The sdist comes from PyPI (`pip download --no-binary :all: --no-deps`); cmake + ninja build only
the `llama-server` target, CPU only, llama.cpp linked in statically, with 2 jobs, into
.cache/bench/llama-server-<version>/ (10-30 minutes on 2 cores, once: a later call reuses the
binary). The build is native (-march=native) except on AMX CPUs, which get README's peer-section
flags; `CMAKE_ARGS`, when set, is passed on last, as pip's build of llama-cpp-python reads it.

    python bench/llama_server_build.py [--rebuild]"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ROOT = REPO_ROOT / ".cache" / "bench"
JOBS = 2
PACKAGE = "llama-cpp-python"
BASE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary: the build tree can go
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",  # the web UI needs npm, or a download from Hugging Face:
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # the bench needs only the API
    "-DLLAMA_OPENSSL=OFF",  # nor HTTPS
    "-DGGML_CUDA=OFF",
    "-DGGML_VULKAN=OFF",
    "-DGGML_METAL=OFF",
)
AMX_FLAGS = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
)
"""On AVX-512 CPUs with AMX, a native build dies with an illegal instruction (README)."""
AVX512_FLAGS = {"avx512f": "-DGGML_AVX512=ON", "avx512_vnni": "-DGGML_AVX512_VNNI=ON", "avx512_bf16": "-DGGML_AVX512_BF16=ON"}


@dataclass(frozen=True)
class LlamaServer:
    """A built `llama-server` and what it was built from."""

    binary: str
    version: str
    """llama-cpp-python's version, whose sdist held the sources."""
    commit: str
    """The vendored llama.cpp's commit ("unknown" when the sdist carried no git metadata)."""
    cmake_flags: list[str]
    build_s: float


def installed_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{PACKAGE} is not installed: pip install -e '.[peer]' (its version picks the sources)") from None


def build_root(version: str) -> Path:
    return CACHE_ROOT / f"llama-server-{version}"


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of /proc/cpuinfo's first `flags` line (empty elsewhere)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_flags(features: set[str], user_args: str = "") -> list[str]:
    """Configure flags: the base set, the AMX workaround when the CPU has AMX, then the user's
    CMAKE_ARGS (last, so they win)."""
    flags = list(BASE_FLAGS)
    if "amx_tile" in features:
        flags += AMX_FLAGS
        flags += [flag for feature, flag in AVX512_FLAGS.items() if feature in features]
    return flags + shlex.split(user_args)


def _tool(name: str) -> str:
    """The venv's cmake/ninja (the `peer` extra installs them), else the system's."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: pip install -e '.[peer]'")
    return found


def _fetch_sdist(version: str, into: Path) -> Path:
    existing = sorted(into.glob("*.tar.gz"))
    if existing:
        return existing[0]
    into.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", f"{PACKAGE}=={version}", "-d", str(into)]
    subprocess.run(command, check=True)
    return sorted(into.glob("*.tar.gz"))[0]


def _vendored_sources(sdist: Path, into: Path) -> Path:
    if not into.is_dir():
        partial = into.with_name(into.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdist) as archive:
            archive.extractall(partial, filter="data")
        partial.rename(into)
    (top,) = into.iterdir()
    sources = top / "vendor" / "llama.cpp"
    if not (sources / "CMakeLists.txt").is_file():
        raise SystemExit(f"{sdist.name} has no vendored llama.cpp at vendor/llama.cpp")
    return sources


def _commit(sources: Path) -> str:
    """The sdist keeps the submodule's git metadata; without it the commit is unknown."""
    result = subprocess.run(["git", "-C", str(sources), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def built(version: str) -> LlamaServer | None:
    """The server built earlier for `version`, or None."""
    root = build_root(version)
    info = root / "build.json"
    if not info.is_file() or not (root / "llama-server").is_file():
        return None
    return LlamaServer(**json.loads(info.read_text()))


def ensure_llama_server(version: str | None = None, rebuild: bool = False) -> LlamaServer:
    """The `llama-server` for the installed llama-cpp-python, built now if it is not yet."""
    version = version or installed_version()
    if not rebuild and (ready := built(version)) is not None:
        return ready
    root = build_root(version)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = cmake_flags(cpu_flags(cpuinfo), os.environ.get("CMAKE_ARGS", ""))
    print(f"building llama-server from {PACKAGE} {version}'s llama.cpp ({JOBS} jobs, 10-30 minutes on 2 cores) ...", flush=True)
    started = time.perf_counter()
    sources = _vendored_sources(_fetch_sdist(version, root / "sdist"), root / "src")
    build = root / "build"
    cmake, ninja = _tool("cmake"), _tool("ninja")
    subprocess.run([cmake, "-S", str(sources), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}", *flags], check=True)
    subprocess.run([cmake, "--build", str(build), "--target", "llama-server", "-j", str(JOBS)], check=True)
    binary = root / "llama-server"
    shutil.copy2(build / "bin" / "llama-server", binary)
    server = LlamaServer(str(binary), version, _commit(sources), flags, round(time.perf_counter() - started, 1))
    (root / "build.json").write_text(json.dumps(asdict(server), indent=1) + "\n")
    for scratch in ("sdist", "src", "build"):  # about 1 GB; the binary is static
        shutil.rmtree(root / scratch, ignore_errors=True)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="build again even if a binary is there")
    args = parser.parse_args()
    version = installed_version()
    fresh = args.rebuild or built(version) is None
    server = ensure_llama_server(version, rebuild=args.rebuild)
    how = "built" if fresh else "reused; it was built"
    print(f"llama-server: {server.binary}")
    print(f"llama.cpp {server.commit} from {PACKAGE} {server.version}; {how} in {server.build_s:.0f} s")


if __name__ == "__main__":
    main()
