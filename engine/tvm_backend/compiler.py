"""Compile a model architecture into a shared library for the host, once, and cache it.

On the CPU the hand-written kernels do the heavy work; on a GPU TVM's dlight rules schedule the
plain functions (engine.tvm_backend.linear picks which while the model is built). The cache key
covers everything the library depends on: the architecture, the weight kind (or a GGUF's kind
per tensor), the device kind and target (with its GPU arch, host mcpu and CPU matmul mode), the
TVM version and the source of Tandem's model and kernels; storing a library drops those it
supersedes (same model and target, older build). TVM itself is imported only to compile: a warm
start reads the cache without it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import ModelConfig
from engine.errors import EngineError

if TYPE_CHECKING:
    import tvm

    from engine.models.llama import WeightKinds
    from engine.tvm_backend.target import HostTarget

ProgressCallback = Callable[[str, float], None]
ParamSpec = tuple[str, tuple[int, ...], str]

LIBRARY_FILE = "model.so"
MANIFEST_FILE = "manifest.json"
_SOURCES = (
    "models/llama.py",
    "models/layers.py",
    "tvm_backend/kernels.py",
    "tvm_backend/int8_kernels.py",
    "tvm_backend/int8_kernels_q8.py",
    "tvm_backend/int8_decode.py",
    "tvm_backend/int8_rows.py",
    "tvm_backend/linear.py",
    "tvm_backend/compiler.py",
    "tvm_backend/pipeline.py",
    "tvm_backend/attention.py",
    "tvm_backend/logit_stats.py",
)


@dataclass(frozen=True)
class CompiledModel:
    library: Path
    params: tuple[ParamSpec, ...]
    """The packed parameter tuple every exported function takes: (name, shape, dtype) in order."""
    compile_s: float
    """Seconds the compile took; 0.0 when the library came from the cache."""


def cache_key(config: ModelConfig, kind: WeightKinds, target: HostTarget) -> str:
    import tvm

    engine_root = Path(__file__).resolve().parent.parent
    sources = hashlib.sha256()
    for relative in _SOURCES:
        sources.update((engine_root / relative).read_bytes())
    identity = {**_lineage(config, kind, target), "tvm": tvm.__version__, "sources": sources.hexdigest()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def lineage_key(config: ModelConfig, kind: WeightKinds, target: HostTarget) -> str:
    """What a library is for, leaving out what built it (TVM, Tandem's sources): a new entry of
    the same lineage makes the older ones stale."""
    return hashlib.sha256(json.dumps(_lineage(config, kind, target), sort_keys=True).encode()).hexdigest()[:32]


def _lineage(config: ModelConfig, kind: WeightKinds, target: HostTarget) -> dict[str, object]:
    return {
        "model_type": config.model_type,
        "model_config": config.to_dict(),
        # A GGUF's kind map (one kind per tensor) keys the library as a whole.
        "weight_kind": kind if isinstance(kind, str) else dict(sorted(kind.items())),
        "target": target.cache_key,
    }


def compiled_model(
    config: ModelConfig,
    kind: WeightKinds,
    target: HostTarget,
    cache_root: Path,
    on_progress: ProgressCallback | None = None,
) -> CompiledModel:
    """The cached library for this model and host, compiling it first when absent."""
    entry = cache_root / "libs" / cache_key(config, kind, target)
    cached = read_entry(entry)
    if cached is not None:
        return cached
    report = on_progress or (lambda stage, fraction: None)
    started = time.perf_counter()
    report("building the model graph", 0.05)
    try:
        executable, params = build_executable(
            config, kind, target, lambda: report("compiling for " + target.label, 0.2)
        )
        report("linking the library", 0.85)
        _store(entry, executable, params, lineage_key(config, kind, target))
    except EngineError:
        raise
    except Exception as error:  # TVM raises many types; the caller gets one clear error
        raise EngineError(
            f"Compiling the model for {target.label} failed ({type(error).__name__}: {error}). "
            f"Check that {_toolchain(target)} is installed, or use the mlc backend."
        ) from error
    compiled = CompiledModel(entry / LIBRARY_FILE, params, time.perf_counter() - started)
    report("compiled", 1.0)
    return compiled


def discard(compiled: CompiledModel) -> None:
    """Drop a cached library that failed to load (truncated, or built by another toolchain)."""
    shutil.rmtree(compiled.library.parent, ignore_errors=True)


def build_executable(
    config: ModelConfig, kind: WeightKinds, target: HostTarget, on_compile: Callable[[], None] = lambda: None
) -> tuple[tvm.runtime.Executable, tuple[ParamSpec, ...]]:
    """The compiled (not yet exported) model and its parameter list; on_compile() marks the
    moment the graph is built and code generation starts."""
    module, params = _export(config, kind, target)
    on_compile()
    return _build(module, target), params


def _export(config: ModelConfig, kind: WeightKinds, target: HostTarget):
    from engine.models.llama import LlamaForCausalLM

    from engine.tvm_backend.int8_decode import decode_fusion
    from engine.tvm_backend.int8_kernels import int8_isa_scope
    from engine.tvm_backend.linear import cpu_matmul

    # The target and its matmul mode pick the linear layers' form (linear.py) and layouts, and
    # whether decode runs the fused int8 kernels (int8_decode.py).
    with (target.target, cpu_matmul(target.cpu_matmul), int8_isa_scope(target.int8_isa),
          decode_fusion(target.decode_fusion)):
        model = LlamaForCausalLM(config, kind, target.target, kv_cache_dtype(config, target))
        module, named_params = model.export_tvm(spec=model.export_spec())
    if not target.is_gpu:
        module = _with_parallel_prefill_attention(module, config, model.kv_dtype)
    params = tuple(
        (name, tuple(int(dim) for dim in param.shape), str(param.dtype)) for name, param in named_params
    )
    return module, params


def kv_cache_dtype(config: ModelConfig, target: HostTarget) -> str:
    """The KV cache's dtype: the target's choice (float16 on the CPU unless TANDEM_KV_CACHE says
    otherwise) where Tandem's attention and RoPE kernels serve the model, which read halves and
    compute in float32; float32 where TVM's own kernels do (a GPU, an unsupported head size or
    RoPE), whose float16 forms were never checked here."""
    from engine.models.llama import kv_cache_rope
    from engine.tvm_backend import attention

    served = not target.is_gpu and attention.supports(config.head_dim)
    return target.kv_cache if served and attention.supports_rope(kv_cache_rope(config)[1]) else "float32"


def _with_parallel_prefill_attention(module: tvm.IRModule, config: ModelConfig, kv_dtype: str) -> tvm.IRModule:
    """Swap the KV cache's serial ragged-prefill, paged-prefill and decode attention for Tandem's
    parallel ones, and its RoPE for one that computes each rotation once per token rather than
    per head; all of them for a cache of `kv_dtype`."""
    from engine.tvm_backend import attention

    if not attention.supports(config.head_dim):
        return module
    heads = (config.num_key_value_heads, config.num_attention_heads, config.head_dim)
    kernels: dict[str, Callable[..., tvm.tirx.PrimFunc]] = {
        attention.RAGGED_PREFILL_NAME: attention.ragged_prefill_attention,
        attention.DECODE_NAME: attention.paged_decode_attention,
        attention.PAGED_PREFILL_NAME: attention.paged_prefill_attention,
    }
    names = {global_var.name_hint: global_var for global_var in module.functions}
    for name, build in kernels.items():
        if name in names:
            module.update_func(names[name], build(*heads, dtype=kv_dtype))
    from engine.models.llama import kv_cache_rope

    scale, scaling = kv_cache_rope(config)
    if attention.ROPE_NAME in names and attention.supports_rope(scaling):
        rope = attention.fused_rope(
            config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.rope_theta, scale, scaling,
            kv_dtype,
        )
        module.update_func(names[attention.ROPE_NAME], rope)
    return module


def _build(module: tvm.IRModule, target: HostTarget):
    return _build_gpu(module, target) if target.is_gpu else _build_cpu(module, target)


def _build_gpu(module: tvm.IRModule, target: HostTarget):
    """TVM's default pipeline for the GPU kind: it fuses each dequantize into its matmul and
    schedules every function with the dlight GPU rules (Matmul, GEMV, Reduction,
    GeneralReduction, Fallback); the KV cache brought its own GPU kernels."""
    import tvm

    from engine.tvm_backend.pipeline import gpu_pipeline

    with _cuda_compiler(target):
        return tvm.compile(module, target=target.target, relax_pipeline=gpu_pipeline(target.target))


@contextmanager
def _cuda_compiler(target: HostTarget):
    """apache-tvm 0.27 turns CUDA source into a binary through NVRTC, which needs the
    cuda-bindings package; without it, nvcc from the CUDA toolkit does the same job."""
    mode_unset = "TVM_CUDA_COMPILE_MODE" not in os.environ
    use_nvcc = (
        target.kind == "cuda"
        and mode_unset
        and not _importable("cuda.bindings")
        and shutil.which("nvcc") is not None
    )
    if use_nvcc:
        os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    try:
        yield
    finally:
        if use_nvcc:
            del os.environ["TVM_CUDA_COMPILE_MODE"]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is absent
        return False


def _toolchain(target: HostTarget) -> str:
    if target.kind == "cuda":
        return "a C compiler (cc/gcc) and the CUDA toolkit (nvcc)"
    return "a C compiler (cc/gcc)"


def _build_cpu(module: tvm.IRModule, target: HostTarget):
    """tvm.compile, except that each group of hand-written kernels gets an LLVM module of its
    own: built in one module with the other functions (or with each other), the linear kernels
    ran 3x slower (measured on apache-tvm 0.27). This uses relax's internal codegen and link
    steps, pinned with the TVM version."""
    import tvm
    from tvm import relax, tirx
    from tvm.relax import vm_build

    from engine.tvm_backend.kernels import KERNEL_ATTR
    from engine.tvm_backend.pipeline import cpu_pipeline

    with target.target:
        module = cpu_pipeline(target.target)(module)
    builder = relax.ExecBuilder()
    module = vm_build._vmcodegen(builder, module, "bytecode")
    groups: dict[str, dict] = {}
    others: dict[Any, Any] = {}
    for global_var, function in module.functions.items():
        if isinstance(function, tirx.PrimFunc):
            group = function.attrs.get(KERNEL_ATTR) if function.attrs is not None else None
            (groups.setdefault(str(group), {}) if group else others)[global_var] = function
    libraries = [tvm.tirx.build(tvm.IRModule(group), target=target.target) for group in groups.values()]
    return vm_build._vmlink(builder, target.target, tvm.IRModule(others), ext_libs=libraries)


def _store(entry: Path, executable, params: tuple[ParamSpec, ...], lineage: str) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=entry.name + ".", dir=entry.parent))
    try:
        executable.export_library(str(staging / LIBRARY_FILE))
        manifest = {
            "library_sha256": _digest(staging / LIBRARY_FILE),
            "lineage": lineage,
            "params": [[name, list(shape), dtype] for name, shape, dtype in params],
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
        try:
            os.replace(staging, entry)
        except OSError:  # another process stored the same entry first: theirs is as good
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune_stale(entry, lineage)


def _prune_stale(entry: Path, lineage: str) -> None:
    """Drop the entries `entry` supersedes: the same lineage built by another TVM or older
    sources, and entries from before manifests named their lineage. Staging folders (their
    names hold a dot) belong to compiles still running."""
    for other in entry.parent.iterdir():
        if other == entry or "." in other.name or not other.is_dir():
            continue
        try:
            manifest = json.loads((other / MANIFEST_FILE).read_text(encoding="utf-8"))
            stale = manifest.get("lineage", lineage) == lineage
        except (OSError, ValueError, AttributeError):
            continue  # unreadable: read_entry drops it if it is ever asked for
        if stale:
            shutil.rmtree(other, ignore_errors=True)


def read_entry(entry: Path) -> CompiledModel | None:
    """The cached model, or None (dropping a damaged entry): loading a truncated library
    would kill the process with SIGBUS, so its digest is checked first."""
    if not entry.exists():
        return None
    library = entry / LIBRARY_FILE
    try:
        manifest = json.loads((entry / MANIFEST_FILE).read_text(encoding="utf-8"))
        params = tuple((name, tuple(shape), dtype) for name, shape, dtype in manifest["params"])
        intact = manifest["library_sha256"] == _digest(library)
    except (OSError, ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return CompiledModel(library, params, 0.0)


def _digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
