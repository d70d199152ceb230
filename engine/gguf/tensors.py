"""A GGUF's tensors -> BlockTensors under MLC's module names: q/k/v and gate/up fused by rows,
llama's Q/K rows un-permuted, floats widened to f32, Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K kept as
stored, and what the runtime has no kernel for re-quantized to q8_0 (Q2_K, Q3_K, Q5_0, Q5_1,
fused parts of mixed types). The plan (which route each tensor takes) is made from metadata alone."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine.block_tensors import BLOCK_BYTES, BlockFormat, BlockTensor, block_elements
from engine.config import ModelConfig
from engine.errors import ModelFileError
from engine.gguf.q8 import quantize_q8_0
from engine.gguf.reader import GGUFFile, GGUFTensor
from engine.layout import LogicalTensor, logical_tensors
from engine.quantization import TensorKind

Route = Literal["native", "widened", "requantized"]
"""native: the file's own bytes. widened: F16/BF16 -> f32 (exact, twice the size).
requantized: dequantized, then quantized to q8_0 (near-lossless)."""

FLOAT_TYPES = ("F32", "F16", "BF16")
NATIVE_FORMATS: dict[str, BlockFormat] = {
    "Q8_0": "q8_0",
    "Q4_0": "q4_0",
    "Q4_1": "q4_1",
    "Q4_K": "q4_k",
    "Q6_K": "q6_k",
    "Q5_K": "q5_k",
}
_FIX = "re-quantize the file to Q8_0, Q4_0, Q4_1 or Q4_K_M with llama.cpp's llama-quantize"
_LAYER_PARTS = {
    "qkv_proj": ("attn_q", "attn_k", "attn_v"),
    "c_attn": ("attn_q", "attn_k", "attn_v"),
    "gate_up_proj": ("ffn_gate", "ffn_up"),
    "o_proj": ("attn_output",),
    "down_proj": ("ffn_down",),
    "input_layernorm": ("attn_norm",),
    "post_attention_layernorm": ("ffn_norm",),
}
_GLOBAL_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


@dataclass(frozen=True)
class TensorPlan:
    """How one logical tensor is made from the file."""

    logical: LogicalTensor
    sources: tuple[GGUFTensor, ...]
    format: BlockFormat
    route: Route
    source_bytes: int
    stored_bytes: int

    @property
    def source_types(self) -> tuple[str, ...]:
        return tuple(source.type_name for source in self.sources)


def gguf_names(tensor: LogicalTensor) -> tuple[str, ...]:
    """The GGUF tensors (llama.cpp's names) a logical tensor is made of, in row order."""
    suffix = ".bias" if tensor.kind is TensorKind.BIAS else ".weight"
    if tensor.module in _GLOBAL_NAMES:
        return (_GLOBAL_NAMES[tensor.module] + suffix,)
    _, _, layer, *_, leaf = tensor.module.split(".")  # model.layers.N[.self_attn|.mlp].leaf
    return tuple(f"blk.{layer}.{part}{suffix}" for part in _LAYER_PARTS[leaf])


def plan_tensors(gguf: GGUFFile, config: ModelConfig) -> list[TensorPlan]:
    """The route of every logical tensor of `config`; ModelFileError for a missing tensor, a
    shape that does not match, or a type that cannot be read."""
    return [_plan(gguf, tensor) for tensor in logical_tensors(config)]


def load_tensor(plan: TensorPlan, config: ModelConfig) -> BlockTensor:
    """The BlockTensor a plan describes (native single-part tensors stay memory-mapped)."""
    parts = [_part_data(plan, source, config) for source in plan.sources]
    data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return BlockTensor(format=plan.format, shape=plan.logical.shape, data=data)


def unpermute_rows(rows: int, heads: int) -> np.ndarray:
    """The row order that undoes llama.cpp's Q/K permutation: its converter turned each head's
    rotary halves (HF layout) into interleaved pairs (GGML layout), reshaping the rows as
    (heads, 2, rows/heads/2) and swapping the last two axes; this swaps them back."""
    return np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(1, 2).reshape(rows)


def _plan(gguf: GGUFFile, tensor: LogicalTensor) -> TensorPlan:
    names = gguf_names(tensor)
    sources = tuple(gguf.tensor(name) for name in names)
    columns = {source.shape[1:] for source in sources}
    shape = (sum(source.shape[0] for source in sources), *sources[0].shape[1:])
    if len(columns) != 1 or shape != tensor.shape:
        found = ", ".join(f"{source.name} {list(source.shape)}" for source in sources)
        raise ModelFileError(
            f"{gguf.path}: {found} do not make the {list(tensor.shape)} tensor the metadata implies; "
            "the file is inconsistent. Re-export it."
        )
    for source in sources:
        if source.type_name not in FLOAT_TYPES and source.type_name not in NATIVE_FORMATS and not dequantizable(
            source.type_name
        ):
            raise ModelFileError(
                f"{gguf.path}: tensor {source.name} is stored as {source.type_name}, which Tandem cannot read; {_FIX}."
            )
    types = {source.type_name for source in sources}
    format: BlockFormat
    route: Route
    if len(tensor.shape) == 1 or types <= set(FLOAT_TYPES):
        format, route = "f32", ("native" if types == {"F32"} else "widened")
    elif len(types) == 1 and next(iter(types)) in NATIVE_FORMATS:
        format, route = NATIVE_FORMATS[next(iter(types))], "native"
    else:  # K-quants and other types without a kernel, or fused parts in different formats
        format, route = "q8_0", "requantized"
    return TensorPlan(tensor, sources, format, route, sum(s.n_bytes for s in sources), _stored_bytes(format, shape))


_CODE8_BYTES_PER_ELEMENT: dict[BlockFormat, float] = {"q6_k": 1 + 4 / 16, "q5_k": 1 + 8 / 32}
"""The K-quants run unpacked (engine.block_codes): a byte per code, f32 scales (and q5_k's mins)."""


def _stored_bytes(format: BlockFormat, shape: tuple[int, ...]) -> int:
    elements = int(np.prod(shape))
    if format == "f32":
        return 4 * elements
    if format in _CODE8_BYTES_PER_ELEMENT:
        return int(elements * _CODE8_BYTES_PER_ELEMENT[format])
    return elements // block_elements(format) * BLOCK_BYTES[format]


def _part_data(plan: TensorPlan, source: GGUFTensor, config: ModelConfig) -> np.ndarray:
    if plan.format == "f32":
        data = _dequantize(source).reshape(source.shape)
    elif plan.format == NATIVE_FORMATS.get(source.type_name):
        data = source.data  # the file's own blocks, row by row
    else:
        data = quantize_q8_0(_dequantize(source).reshape(source.shape))
    order = _row_order(source.name, source.shape[0], config)
    return data if order is None else data[order]


def _row_order(name: str, rows: int, config: ModelConfig) -> np.ndarray | None:
    """llama.cpp permutes llama's Q and K rows (never Qwen2's); a row reorder undoes it on any format."""
    if config.model_type != "llama":
        return None
    if name.endswith(".attn_q.weight"):
        return unpermute_rows(rows, config.num_attention_heads)
    if name.endswith(".attn_k.weight"):
        return unpermute_rows(rows, config.num_key_value_heads)
    return None


def _dequantize(source: GGUFTensor) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    return np.asarray(dequantize(source.data, GGMLQuantizationType[source.type_name]), dtype=np.float32)


@functools.cache
def dequantizable(type_name: str) -> bool:
    """Whether the gguf package can turn this type into floats (it covers K-quants, not all IQ types)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    try:
        qtype = GGMLQuantizationType[type_name]
        _, type_size = GGML_QUANT_SIZES[qtype]
        dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except (KeyError, NotImplementedError, ValueError):
        return False
    return True
