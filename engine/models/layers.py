"""Weight-carrying layers shared by the architectures: linear and embedding, dense, MLC's 4-bit
groups or llama.cpp's blocks (each layer has its own kind: a GGUF mixes them per tensor).

Their parameters use Tandem's tiled layout (repack.py fills them from MLC's tensors); the
matmuls call the target's linear function (engine.tvm_backend.linear).
"""

from __future__ import annotations

from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from engine.tvm_backend.kernels import (
    CODE8_KINDS,
    Q4_GROUP,
    Q4_PER_WORD,
    WeightKind,
    has_min,
    q4_code,
    q4_groups,
    q4_value,
    scale_dtype,
    weight_group,
)
from engine.tvm_backend.linear import linear, linear_shape


class Linear(nn.Module):
    """y = x @ W.T (+ bias), W stored dense (q0) or in groups of 32 codes (kernels.WeightKind)."""

    def __init__(self, in_features: int, out_features: int, kind: WeightKind, bias: bool = False):
        self.shape = linear_shape(kind, out_features, in_features)
        for name, (shape, dtype) in self.shape.weight_shapes().items():
            setattr(self, name, nn.Parameter(shape, dtype))
        self.bias = nn.Parameter((out_features,), "float32") if bias else None

    def weights(self) -> list[Tensor]:
        """The weight parameters in the order the linear kernels take them."""
        return [getattr(self, name) for name in self.shape.weight_shapes()]

    def forward(self, x: Tensor) -> Tensor:
        *lead, k_in = x.shape
        rows = 1
        for dim in lead:
            rows = rows * dim
        y = linear(self.shape, op.reshape(x, (rows, k_in)), self.weights())
        if self.bias is not None:
            y = y + self.bias
        return op.reshape(y, (*lead, self.shape.n_out))


class Embedding(nn.Module):
    """Token id -> hidden vector, rows kept row-major (rows are token ids): dense (q0), MLC's
    4-bit groups (q4, q4h), or llama.cpp's blocks (q4_0 / q4_1 / q4_k: codes, scale and min;
    q8_0, q6_k, q5_k: int8 codes, a scale per weight_group and q5_k's min), dequantized as they
    are gathered."""

    def __init__(self, vocab_size: int, hidden_size: int, kind: WeightKind):
        self.kind = kind
        groups = q4_groups(hidden_size)
        if kind == "q0":
            self.weight = nn.Parameter((vocab_size, hidden_size), "float32")
        elif kind in CODE8_KINDS:
            self.q_weight = nn.Parameter((vocab_size, groups * Q4_GROUP), "int8")
            self.q_scale = nn.Parameter((vocab_size, -(-hidden_size // weight_group(kind))), scale_dtype(kind))
            if has_min(kind):
                self.q_min = nn.Parameter((vocab_size, -(-hidden_size // weight_group(kind))), scale_dtype(kind))
        else:
            self.q_weight = nn.Parameter((vocab_size, groups * Q4_GROUP // Q4_PER_WORD), "uint32")
            self.q_scale = nn.Parameter((vocab_size, groups), scale_dtype(kind))
            if has_min(kind):
                self.q_min = nn.Parameter((vocab_size, groups), scale_dtype(kind))
        self.hidden_size = hidden_size

    def forward(self, ids: Tensor) -> Tensor:
        if self.kind == "q0":
            return op.take(self.weight, ids, axis=0)
        kind = self.kind

        def gather_dequantize(q: te.Tensor, s: te.Tensor, token_ids: te.Tensor, *low: te.Tensor) -> te.Tensor:
            def value(i, h):
                row = token_ids[i]
                if kind in CODE8_KINDS:
                    group = h // weight_group(kind)
                    value = q[row, h].astype("float32") * s[row, group].astype("float32")
                    return value + low[0][row, group].astype("float32") if low else value
                scale = s[row, h // Q4_GROUP].astype("float32")
                if low:
                    return q4_code(q[row, h // Q4_PER_WORD], h) * scale + low[0][row, h // Q4_GROUP].astype("float32")
                return q4_value(q[row, h // Q4_PER_WORD], h) * scale

            return te.compute((token_ids.shape[0], self.hidden_size), value, name="embed_dequantize")

        extra = [self.q_min] if has_min(kind) else []
        return op.tensor_expr_op(
            gather_dequantize, "embed_dequantize", args=[self.q_weight, self.q_scale, ids, *extra]
        )
