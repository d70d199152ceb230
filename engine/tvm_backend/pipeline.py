"""The relax-to-library pipelines. CPU: TVM's generic CPU passes, plus schedules for what the
hand-written kernels do not cover (norms and elementwise ops), so no loop runs unscheduled, and
a SiLU without libm calls (so it vectorises). GPU: TVM's generic GPU passes (fusing each
dequantize into its matmul) with the dlight GPU rules scheduling every function."""

from __future__ import annotations

import math

import tvm
from tvm import relax, s_tir, te, tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.relax.backend.gpu_generic import pipeline as gpu_generic
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

VECTOR_LANES = 16


def _spans_prompt_rows(func: tirx.PrimFunc) -> bool:
    """Whether a function's loops depend on the prompt length: decode-step functions (static
    shapes, one token) are too small to gain from threads and stay serial."""
    blocks = normalize_prim_func(s_tir.Schedule(func)) or ()
    return any(not isinstance(it.dom, (int, tirx.IntImm)) for block in blocks for it in block.iters)


class PromptReduction(dlight.cpu.Reduction):
    """TVM's CPU rule for norms, for prefill-shaped functions only."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not _spans_prompt_rows(func):
            return None
        return super().apply(func, target, tunable)


class Elementwise(CPUScheduleRule):
    """Injective prefill-shaped functions: inline every block into the last, parallelise its
    outer loops and vectorise the innermost (split to the vector width when the extent is known)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        if not _spans_prompt_rows(func):
            return None
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        if not blocks or not all(block.is_injective() for block in blocks):
            return None
        try:
            for block in blocks[:-1]:
                sch.compute_inline(block.block_rv)
        except s_tir.ScheduleError:
            return None
        loops = sch.get_loops(blocks[-1].block_rv)
        if not loops:
            return None
        inner = loops[-1]
        outer = loops[:-1]
        if outer:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
        extent = sch.get(inner).extent
        if isinstance(extent, tirx.IntImm) and extent.value % VECTOR_LANES == 0:
            sch.vectorize(sch.split(inner, [None, VECTOR_LANES])[1])
        return sch


def silu_value(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """x * sigmoid(x) as x / (1 + 2^(-x log2 e)) with the inline exp2: TVM's sigmoid calls expf
    once per element. The fused decode kernels (int8_decode.py) compute the same expression."""
    from engine.tvm_backend.attention import exp2

    return x / (1 + exp2(x * -tirx.const(1 / math.log(2), "float32")))


def _silu(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    def silu(x: te.Tensor) -> te.Tensor:
        return te.compute(x.shape, lambda *i: silu_value(x(*i)), name="silu")

    return bb.call_te(silu, call.args[0])


def cpu_pipeline(target: Target) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0)
    def pipeline(module: tvm.ir.IRModule, _context: tvm.transform.PassContext) -> tvm.ir.IRModule:
        with target:
            passes = (
                cpu_generic.library_dispatch_passes(target)
                + [relax.transform.LegalizeOps({"relax.nn.silu": _silu})]
                + cpu_generic.legalize_passes(target)
                + [dlight.ApplyDefaultSchedule(PromptReduction(), Elementwise())]
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(module)

    return pipeline


def gpu_rules(target: Target) -> tuple[dlight.ScheduleRule, ...]:
    """TVM's default GPU rules, in its order. On metal, dlight's Matmul rule switches to
    simdgroup tensorization, which crashes the process on float32 matmuls (apache-tvm 0.27),
    so prefill matmuls there go to the general reduction rule instead."""
    matmul = () if target.kind.name == "metal" else (dlight.gpu.Matmul(),)
    return (
        *matmul,
        dlight.gpu.GEMV(),
        dlight.gpu.Reduction(),
        dlight.gpu.GeneralReduction(),
        dlight.gpu.Fallback(),
    )


def gpu_pipeline(target: Target) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0)
    def pipeline(module: tvm.ir.IRModule, _context: tvm.transform.PassContext) -> tvm.ir.IRModule:
        with target:
            passes = (
                gpu_generic.library_dispatch_passes(target)
                + [
                    relax.transform.LegalizeOps(),
                    relax.transform.AnnotateTIROpPattern(),
                    relax.transform.FoldConstant(),
                    relax.transform.FuseOps(),
                    relax.transform.FuseTIR(),
                    dlight.ApplyDefaultSchedule(*gpu_rules(target)),
                ]
                + gpu_generic.dataflow_lower_passes(target)
                + gpu_generic.finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(module)

    return pipeline

