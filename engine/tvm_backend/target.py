"""Which device to compile for: a GPU (cuda, metal, vulkan) when this TVM build can drive one
and one is present, else the host CPU with its detected microarchitecture; TANDEM_DEVICE forces
one. On the CPU, TANDEM_CPU_MATMUL picks how the 4-bit linear layers compute, and for int8 the
host's features pick the instructions (TANDEM_INT8_ISA forces a variant); TANDEM_KV_CACHE the
KV cache's dtype.

A target's string (with the GPU arch and the host's mcpu), its matmul mode, int8 variant and KV
cache dtype are part of the compile cache key because a library is tied to them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import tvm

from engine.errors import EngineError
from engine.tvm_backend.kernels import CpuMatmul
from engine.tvm_backend.threads import cpu_threads

if TYPE_CHECKING:
    from engine.tvm_backend.int8_kernels import Int8Isa

DeviceKind = Literal["cpu", "cuda", "metal", "vulkan"]
DEVICE_ENV = "TANDEM_DEVICE"
"""cpu, cuda, metal, vulkan, or auto (the default): the device the tvm backend runs on."""
GPU_KINDS: tuple[DeviceKind, ...] = ("cuda", "metal", "vulkan")
"""In the order auto tries them; vulkan, the most generic, last."""
CPU_MATMUL_ENV = "TANDEM_CPU_MATMUL"
"""float or int8 (the default, see cpu_matmul_mode): int8 activations and integer dot products
for the 4-bit linear layers, on CPUs with AVX512-VNNI, AVX-VNNI, AVX2 or ARM's dotprod
(elsewhere float is used)."""
CPU_MATMUL_MODES: tuple[CpuMatmul, ...] = ("float", "int8")
DECODE_FUSION_ENV = "TANDEM_DECODE_FUSION"
"""on (the default) or off: with int8, each linear layer of a decode step is one kernel with the
norm, SwiGLU and residual add around it (int8_decode.py); off keeps them apart, to compare."""
KV_CACHE_ENV = "TANDEM_KV_CACHE"
"""float16 (the default) or float32: the dtype of the KV cache on the CPU. Halves are half the
memory a long context's attention reads (the kernels compute in float32 either way)."""
KV_CACHE_DTYPES = ("float16", "float32")
_BUILD_FLAGS = {"cuda": "USE_CUDA", "metal": "USE_METAL", "vulkan": "USE_VULKAN"}
_RUNTIME_NEEDS = {
    "cuda": "the NVIDIA driver's libcuda.so.1 or CUDA 13's libcudart.so.13",
    "metal": "the Metal framework",
    "vulkan": "the Vulkan loader libvulkan",
}


@dataclass(frozen=True)
class HostTarget:
    target: tvm.target.Target
    device: tvm.runtime.Device
    label: str
    """For people: e.g. "cpu (skylake-avx512, 2 threads)" or "cuda (NVIDIA H100, sm_90)"."""
    kind: DeviceKind = "cpu"
    cpu_matmul: CpuMatmul = "float"
    """How the CPU kernels compute the 4-bit linear layers (see CPU_MATMUL_ENV)."""
    int8_isa: Int8Isa | None = None
    """With int8: the instructions its kernels use (int8_kernels.Int8Isa)."""
    decode_fusion: bool = False
    """With int8: whether decode runs the fused one-row kernels (see DECODE_FUSION_ENV)."""
    kv_cache: str = "float32"
    """The KV cache's dtype where Tandem's attention kernels serve the model (see KV_CACHE_ENV);
    a GPU keeps TVM's kernels and float32."""

    @property
    def is_gpu(self) -> bool:
        return self.kind != "cpu"

    @property
    def cache_key(self) -> str:
        isa = f":{self.int8_isa}" if self.cpu_matmul == "int8" else ""
        fused = ":fused-decode" if self.decode_fusion else ""
        kv = f":kv-{self.kv_cache}" if self.kv_cache != "float32" else ""
        return f"{self.kind}:{self.target}:{self.cpu_matmul}{isa}{fused}{kv}"


def host_target(device: str | None = None, model_matmul: str | None = None) -> HostTarget:
    """The target for `device` (default: $TANDEM_DEVICE, else auto: the first usable GPU, else
    the CPU). A forced device that is not usable raises EngineError saying why. model_matmul is
    the CPU matmul mode the model's config asks for (see cpu_matmul_mode)."""
    wanted = (device or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    named = next((known for known in ("cpu", *GPU_KINDS) if known == wanted), None)
    kind: DeviceKind
    if wanted == "auto":
        kind = next((gpu for gpu in GPU_KINDS if gpu_unavailable_reason(gpu) is None), "cpu")
    elif named is not None:
        kind = named
    else:
        raise EngineError(
            f"Unknown device {wanted!r} (from {DEVICE_ENV} or the settings); "
            f"use auto, cpu, {', '.join(GPU_KINDS)}."
        )
    if kind == "cpu":
        return cpu_target(model_matmul)
    reason = gpu_unavailable_reason(kind)
    if reason is not None:
        raise EngineError(
            f"The {kind} device was asked for, but {reason}. Unset {DEVICE_ENV} (or set it to "
            "auto or cpu) to run on what this machine has."
        )
    device_handle = _device(kind)
    target = tvm.target.Target(tvm.target.Target.from_device(device_handle), host=_cpu_target())
    return HostTarget(target, device_handle, f"{kind} ({_gpu_description(kind, target, device_handle)})", kind)


def cpu_target(model_matmul: str | None = None) -> HostTarget:
    target = _cpu_target()
    mcpu = target.attrs.get("mcpu", "generic")
    threads = cpu_threads()
    matmul = cpu_matmul_mode(target, model_matmul)
    isa = cpu_int8_isa(target) if matmul == "int8" else None
    count = f"{threads} threads" if threads else "TVM's default threads"
    label = f"cpu ({mcpu}, {count}{f', int8 matmul ({isa})' if isa else ''})"
    fused = decode_fusion_wanted()  # read (and checked) whatever the matmul mode
    return HostTarget(target, tvm.cpu(), label, "cpu", matmul, isa, matmul == "int8" and fused, kv_cache_wanted())


def kv_cache_wanted() -> str:
    """$TANDEM_KV_CACHE: float16 unless it says float32."""
    wanted = os.environ.get(KV_CACHE_ENV, "float16").strip().lower() or "float16"
    if wanted not in KV_CACHE_DTYPES:
        raise EngineError(f"Unknown value {wanted!r} in {KV_CACHE_ENV}; use float16 or float32.")
    return wanted


def decode_fusion_wanted() -> bool:
    """$TANDEM_DECODE_FUSION: on unless it says off (or 0, false, no)."""
    wanted = os.environ.get(DECODE_FUSION_ENV, "on").strip().lower()
    if wanted in ("on", "1", "true", "yes", ""):
        return True
    if wanted in ("off", "0", "false", "no"):
        return False
    raise EngineError(f"Unknown value {wanted!r} in {DECODE_FUSION_ENV}; use on or off.")


def cpu_int8_isa(target: tvm.target.Target) -> Int8Isa | None:
    """The int8 kernels' instructions on `target`: $TANDEM_INT8_ISA, else the fastest it has."""
    from engine.tvm_backend.int8_kernels import int8_isa

    try:
        return int8_isa(target)
    except ValueError as problem:
        raise EngineError(str(problem)) from None


def cpu_matmul_mode(target: tvm.target.Target, model_matmul: str | None = None) -> CpuMatmul:
    """$TANDEM_CPU_MATMUL, else the model's own choice (its config's "tandem": {"cpu_matmul"}),
    else int8: llama.cpp's numerics (activations quantized per block of 32), about twice float's
    speed. int8 falls back to float on a CPU with none of the int8 variants' instructions."""
    from engine.tvm_backend.int8_kernels import supports_int8

    from_env = os.environ.get(CPU_MATMUL_ENV)
    source = CPU_MATMUL_ENV if from_env else "the model's mlc-chat-config.json (tandem.cpu_matmul)"
    wanted = (from_env or model_matmul or "int8").strip().lower()
    if wanted not in CPU_MATMUL_MODES:
        raise EngineError(
            f"Unknown CPU matmul mode {wanted!r} in {source}; use {' or '.join(CPU_MATMUL_MODES)}."
        )
    return "int8" if wanted == "int8" and supports_int8(target) else "float"


def gpu_build_target(spec: dict[str, Any]) -> HostTarget:
    """A GPU target from a TVM target dict (e.g. {"kind": "cuda", "arch": "sm_80"}) with the host
    CPU as its host, for compiling a library without the GPU present (it cannot run here)."""
    kind = spec["kind"]
    if kind not in GPU_KINDS:
        raise EngineError(f"Not a GPU target kind: {kind!r}; use one of {', '.join(GPU_KINDS)}.")
    target = tvm.target.Target(spec, host=_cpu_target())
    detail = target.attrs.get("arch") or kind
    return HostTarget(target, _device(kind), f"{kind} ({detail}, build only)", kind)


def gpu_unavailable_reason(kind: DeviceKind) -> str | None:
    """None when this TVM build can drive a `kind` GPU and one is present, else why not."""
    flag = _BUILD_FLAGS[kind]
    if str(tvm.support.libinfo().get(flag, "OFF")).upper() in ("OFF", "", "0", "FALSE", "NOTFOUND"):
        return f"the installed apache-tvm was built without {kind} ({flag}=OFF)"
    try:
        present = bool(_device(kind).exist)
    except Exception:  # noqa: BLE001  (a missing driver library surfaces as a TVM error)
        present = False
    if present:
        return None
    if tvm.get_global_func(f"ffi.Module.load_from_bytes.{kind}", allow_missing=True) is None:
        return f"apache-tvm's {kind} runtime did not load ({_RUNTIME_NEEDS[kind]} missing?)"
    return f"no {kind} device was found"


def _cpu_target() -> tvm.target.Target:
    return tvm.target.Target.from_device(tvm.cpu())


def _device(kind: DeviceKind) -> tvm.runtime.Device:
    return {"cuda": tvm.cuda, "metal": tvm.metal, "vulkan": tvm.vulkan}[kind](0)


def _gpu_description(kind: DeviceKind, target: tvm.target.Target, device: tvm.runtime.Device) -> str:
    parts = []
    try:
        parts.append(str(device.device_name))
    except Exception:  # noqa: BLE001  (the name is a nicety)
        pass
    arch = target.attrs.get("arch")
    if arch:
        parts.append(str(arch))
    return ", ".join(parts) or kind
