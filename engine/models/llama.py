"""The Llama family (llama: Llama 3.x, SmolLM2, TinyLlama; qwen2: with qkv bias) in relax nn.

Pre-norm decoder layers: RMSNorm -> fused qkv projection -> paged-KV attention with RoPE ->
o_proj -> residual; RMSNorm -> fused gate/up projection -> SwiGLU -> down_proj -> residual.
Activations are float32 whatever the stored weights; logits are float32. The KV cache holds keys
and values in its own dtype (kv_dtype: float16 on the CPU, where Tandem's attention kernels read
halves and compute in float32; see compiler.kv_cache_dtype).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

from tvm import relax, te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache
from tvm.target import Target

from engine.models.layers import Embedding, Linear
from engine.tvm_backend.int8_decode import DecodeFusion, decode_fusion_enabled, fusable, fused_linear
from engine.tvm_backend.kernels import WeightKind
from engine.tvm_backend.linear import linear
from engine.tvm_backend.logit_stats import FUNCTION as LOGIT_STATS
from engine.tvm_backend.logit_stats import block_stats_kernel
from engine.tvm_backend.logit_stats import blocks as logit_blocks

if TYPE_CHECKING:
    from engine.config import ModelConfig


WeightKinds = Union[WeightKind, Mapping[str, WeightKind]]
"""One kind for every weight (an MLC quantization), or a kind per module name (LogicalTensor
.module, e.g. "model.layers.0.mlp.down_proj"): a GGUF keeps each tensor in its own format.
A map without "lm_head" gives the head the embedding's kind (a tied head reuses its blocks)."""
EMBEDDING_MODULE = "model.embed_tokens"
HEAD_MODULE = "lm_head"


def kind_for(kinds: WeightKinds, module: str) -> WeightKind:
    """The weight kind of one module under `kinds`."""
    if isinstance(kinds, str):
        return kinds
    if module == HEAD_MODULE and module not in kinds:
        return kinds[EMBEDDING_MODULE]
    return kinds[module]


def weight_kind(quantization: str) -> WeightKind:
    """q4f16_1 -> "q4h", q4f32_1 -> "q4", q0f16 / q0f32 -> "q0" (computing in float32 always)."""
    if quantization == "q4f16_1":
        return "q4h"
    return "q4" if quantization.startswith("q4") else "q0"


def fused_qkv_name(config: ModelConfig) -> str:
    """MLC's name for the fused q/k/v projection: c_attn in qwen2, qkv_proj in llama."""
    return "c_attn" if config.model_type == "qwen2" else "qkv_proj"


def kv_cache_rope(config: ModelConfig) -> tuple[float, dict[str, Any]]:
    """(rope_scale, rope_scaling) as the paged KV cache takes them. Its rope_scale multiplies
    the positions, so linear scaling (positions divided by the factor) passes 1 / factor;
    llama3-style scaling reshapes the frequencies instead."""
    scaling = dict(config.rope_scaling or {})
    if scaling.get("rope_type") == "linear":
        return 1.0 / float(scaling["factor"]), {}
    return 1, scaling


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, kinds: WeightKinds, prefix: str):
        gate_up, down = kind_for(kinds, f"{prefix}.gate_up_proj"), kind_for(kinds, f"{prefix}.down_proj")
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, gate_up)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, down)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(op.silu(gate) * up)


def cast(tensor: Tensor, dtype: str) -> Tensor:
    """`tensor` in `dtype`: no operation (no kernel) when it already is."""
    return tensor if tensor.dtype == dtype else tensor.astype(dtype)


class Attention(nn.Module):
    """q/k/v in one linear layer, the KV cache's attention, o_proj. The cache takes q/k/v and gives
    the output in its own dtype (`kv_dtype`): with a float16 cache they are cast around it."""

    def __init__(self, config: ModelConfig, kinds: WeightKinds, prefix: str, kv_dtype: str = "float32"):
        self.kv_dtype = kv_dtype
        self.head_dim = config.head_dim
        self.num_q_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        qkv_width = (self.num_q_heads + 2 * self.num_kv_heads) * self.head_dim
        self.qkv_name = fused_qkv_name(config)
        qkv_kind = kind_for(kinds, f"{prefix}.{self.qkv_name}")
        fused = Linear(config.hidden_size, qkv_width, qkv_kind, bias=config.attention_bias)
        setattr(self, self.qkv_name, fused)
        o_kind = kind_for(kinds, f"{prefix}.o_proj")
        self.o_proj = Linear(self.num_q_heads * self.head_dim, config.hidden_size, o_kind)

    def forward(self, x: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        batch, seq_len, _ = x.shape
        heads = self.num_q_heads + 2 * self.num_kv_heads
        qkv = op.reshape(getattr(self, self.qkv_name)(x), (batch, seq_len, heads, self.head_dim))
        attended = kv_cache.attention_with_fused_qkv(
            layer_id, cast(qkv, self.kv_dtype), self.num_q_heads, sm_scale=self.head_dim**-0.5
        )
        return self.o_proj(op.reshape(cast(attended, "float32"), (batch, seq_len, self.num_q_heads * self.head_dim)))

    def decode_attention(self, qkv: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        """Attention for one token of each sequence, on their fused q/k/v rows [rows, heads * dim]
        -> [rows, q_heads * dim] in the cache's dtype (the fused kernels around it write and read
        that): the KV cache's builtin called on [rows, heads, dim] directly (attention_with_fused_qkv
        wraps the same call in reshapes to and from [batch, seq_len, ...])."""
        heads = self.num_q_heads + 2 * self.num_kv_heads
        count = qkv.shape[0]
        rows = cast(op.reshape(qkv, (count, heads, self.head_dim)), self.kv_dtype)
        attended = Tensor(
            _expr=relax.BlockBuilder.current().emit(
                relax.call_dps_packed(
                    "vm.builtin.attention_kv_cache_attention_with_fused_qkv",
                    [kv_cache._expr, relax.prim_value(layer_id), relax.prim_value(self.head_dim**-0.5), rows._expr],
                    out_ty=relax.TensorType((count, self.num_q_heads, self.head_dim), self.kv_dtype),
                )
            )
        )
        return op.reshape(attended, (count, self.num_q_heads * self.head_dim))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, kinds: WeightKinds, layer: int, kv_dtype: str = "float32"):
        eps = config.rms_norm_eps
        prefix = f"model.layers.{layer}"
        self.input_layernorm = nn.RMSNorm(config.hidden_size, -1, eps, bias=False)
        self.self_attn = Attention(config, kinds, f"{prefix}.self_attn", kv_dtype)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, -1, eps, bias=False)
        self.mlp = MLP(config, kinds, f"{prefix}.mlp")

    def forward(self, hidden: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), kv_cache, layer_id)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))

    def linears(self) -> list[Linear]:
        attention = self.self_attn
        return [getattr(attention, attention.qkv_name), attention.o_proj, self.mlp.gate_up_proj, self.mlp.down_proj]

    def fusable(self) -> bool:
        """Whether fused_decode can run this layer: every linear layer fusable, no bias."""
        return all(fusable(layer.shape) and layer.bias is None for layer in self.linears())

    def fused_decode(self, hidden: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        """forward for one token of each sequence, rows [rows, hidden] (one in a decode step, a
        symbolic number in a batched one), in four fused int8 kernels and attention: norm + qkv,
        o_proj + residual, norm + gate_up, SwiGLU + down_proj + residual."""
        qkv, o_proj, gate_up, down = self.linears()
        kv_dtype = self.self_attn.kv_dtype  # qkv writes it, o_proj reads it: no casts between
        before_attention = DecodeFusion("rms_norm", eps=self.input_layernorm.epsilon, output_dtype=kv_dtype)
        after_attention = DecodeFusion(residual=True, input_dtype=kv_dtype)
        before_mlp = DecodeFusion("rms_norm", eps=self.post_attention_layernorm.epsilon)
        rows = fused_linear(qkv.shape, qkv.weights(), before_attention, hidden, norm=self.input_layernorm.weight)
        attended = self.self_attn.decode_attention(rows, kv_cache, layer_id)
        hidden = fused_linear(o_proj.shape, o_proj.weights(), after_attention, attended, residual=hidden)
        gate_up_rows = fused_linear(
            gate_up.shape, gate_up.weights(), before_mlp, hidden, norm=self.post_attention_layernorm.weight
        )
        return fused_linear(down.shape, down.weights(), DecodeFusion("swiglu", residual=True), gate_up_rows, residual=hidden)


def middle_depth(num_layers: int) -> int:
    """How many decoder blocks the exported middle state has passed: two thirds of the model
    (20 of SmolLM2-135M's 30). Probes for a wrong answer read best there: on SmolLM2's general
    eval set, states after blocks 15 to 23 scored alike and the final one worst (held-out AUROC of
    the answer-mean probe 0.83 at block 20, 0.79 after the last norm)."""
    return max(1, round(num_layers * 2 / 3))


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, kinds: WeightKinds, kv_dtype: str = "float32"):
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, kind_for(kinds, EMBEDDING_MODULE))
        self.layers = nn.ModuleList(
            [DecoderLayer(config, kinds, layer, kv_dtype) for layer in range(config.num_hidden_layers)]
        )
        self.norm = nn.RMSNorm(config.hidden_size, -1, config.rms_norm_eps, bias=False)
        self.middle = middle_depth(config.num_hidden_layers)

    def forward(self, hidden: Tensor, kv_cache: PagedKVCache) -> Tensor:
        return self.forward_with_middle(hidden, kv_cache)[0]

    def forward_with_middle(self, hidden: Tensor, kv_cache: PagedKVCache) -> tuple[Tensor, Tensor]:
        """(the final normed state, the residual stream after `middle` blocks)."""
        middle = hidden
        for layer_id, layer in enumerate(self.layers):
            hidden = layer(hidden, kv_cache, layer_id)
            if layer_id + 1 == self.middle:
                middle = hidden
        return self.norm(hidden), middle


class LlamaForCausalLM(nn.Module):
    """The exported functions: embed, prefill (last-token logits and final hidden state),
    prefill_all_logits (every row's logits, for scoring a prompt), decode (logits and final
    hidden state), batch_decode (one token for each of several sequences), logit_stats (the
    sampler's per-block statistics of logits; CPU libraries), create_tir_paged_kv_cache.

    prefill and decode also return the states the router's probes read, [1, 2, hidden] at the
    last token: row 0 the final hidden state (after the last norm), row 1 the residual stream at
    two thirds of the depth (middle_depth).

    The output head is always its own tiled parameter `lm_head`; with tied embeddings the
    loader fills it from the embedding table (its codes and scales, in the embedding's kind)."""

    def __init__(self, config: ModelConfig, kinds: WeightKinds, target: Target, kv_dtype: str = "float32"):
        self.config = config
        self.target = target
        self.kv_dtype = kv_dtype
        self.model = LlamaModel(config, kinds, kv_dtype)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, kind_for(kinds, HEAD_MODULE))
        # Chosen while the compiler's scopes (target, matmul mode, fusion) are entered.
        self.decode_is_fused = decode_fusion_enabled() and all(layer.fusable() for layer in self.model.layers)

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.model.embed_tokens(input_ids)

    def prefill(self, input_embed: Tensor, kv_cache: PagedKVCache):
        hidden, middle = self.model.forward_with_middle(input_embed, kv_cache)

        def last_row(x: te.Tensor) -> te.Tensor:
            batch, seq_len, width = x.shape
            return te.compute((batch, 1, width), lambda b, _, h: x[b, seq_len - 1, h], name="last_row")

        last = op.tensor_expr_op(last_row, "last_row", args=[hidden])
        last_middle = op.tensor_expr_op(last_row, "last_row", args=[middle])
        return self.lm_head(last), op.concat([last, last_middle], dim=1), kv_cache

    def prefill_all_logits(self, input_embed: Tensor, kv_cache: PagedKVCache):
        """Like prefill, with the logits of every row [1, seq_len, vocab]: a verifier scores a
        prefix plus a draft in one pass (callers keep seq_len small: the logits are vocab-wide)."""
        return self.lm_head(self.model(input_embed, kv_cache)), kv_cache

    def decode(self, input_embed: Tensor, kv_cache: PagedKVCache):
        if self.decode_is_fused:
            return self._fused_decode(input_embed, kv_cache)
        hidden, middle = self.model.forward_with_middle(input_embed, kv_cache)
        return self.lm_head(hidden), op.concat([hidden, middle], dim=1), kv_cache

    def _fused_layers(self, input_embed: Tensor, kv_cache: PagedKVCache) -> tuple[Tensor, Tensor]:
        """The decoder blocks through the fused int8 kernels on [rows, hidden] throughout: (the
        last block's output, not yet normed; the state after `middle` blocks)."""
        hidden = op.reshape(input_embed, (input_embed.shape[0], self.config.hidden_size))
        middle = hidden
        for layer_id, layer in enumerate(self.model.layers):
            hidden = layer.fused_decode(hidden, kv_cache, layer_id)
            if layer_id + 1 == self.model.middle:
                middle = hidden
        return hidden, middle

    def _fused_decode(self, input_embed: Tensor, kv_cache: PagedKVCache):
        """decode through the fused int8 kernels, the hidden state [1, hidden] throughout."""
        hidden, middle = self._fused_layers(input_embed, kv_cache)
        normed = self.model.norm(hidden)
        logits = linear(self.lm_head.shape, normed, self.lm_head.weights())
        states = op.reshape(op.concat([normed, middle], dim=0), (1, 2, self.config.hidden_size))
        return op.reshape(logits, (1, 1, self.config.vocab_size)), states, kv_cache

    def batch_decode(self, input_embed: Tensor, kv_cache: PagedKVCache):
        """One token for each of several sequences: [batch, 1, hidden] in the order of the
        sequence ids given to kv_state_begin_forward; logits [batch, 1, vocab]. A symbolic
        batch makes the linear layers take their many-row kernels; where decode is fused, so is
        this step (the same four kernels per layer, the final norm inside the output head's
        where it can be), which spares the VM a dozen calls per layer."""
        if not self.decode_is_fused:
            return self.lm_head(self.model(input_embed, kv_cache)), kv_cache
        batch = input_embed.shape[0]
        hidden, _ = self._fused_layers(input_embed, kv_cache)
        head, norm = self.lm_head, self.model.norm
        if fusable(head.shape) and head.bias is None:
            final = DecodeFusion("rms_norm", eps=norm.epsilon)
            logits = fused_linear(head.shape, head.weights(), final, hidden, norm=norm.weight)
        else:
            logits = linear(head.shape, norm(hidden), head.weights())
        return op.reshape(logits, (batch, 1, self.config.vocab_size)), kv_cache

    def logit_stats(self, logits: Tensor):
        """Per-block maxima and sums of exp of logits [rows, vocab] (logit_stats.py): what the
        sampler needs from the whole vocabulary, computed in parallel before the download."""
        kernel = block_stats_kernel(self.config.vocab_size)
        shape = (logits.shape[0], logit_blocks(self.config.vocab_size), 2)
        return op.tensor_ir_op(kernel, LOGIT_STATS, args=[logits], out=Tensor.placeholder(shape, "float32"))

    def create_tir_paged_kv_cache(
        self,
        max_batch_size: tirx.Var,
        max_total_seq_len: tirx.Var,
        prefill_chunk_size: tirx.Var,
        page_size: tirx.Var,
        support_sliding_window: tirx.Var,
    ) -> PagedKVCache:
        config = self.config
        rope_scale, rope_scaling = kv_cache_rope(config)
        return TIRPagedKVCache(
            attn_kind="mha",
            max_batch_size=max_batch_size,
            max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size,
            page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=relax.ShapeExpr([0, config.num_hidden_layers]),
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            qk_head_dim=config.head_dim,
            v_head_dim=config.head_dim,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            rope_mode=RopeMode.NORMAL,
            rope_scale=rope_scale,
            rope_theta=config.rope_theta,
            rope_scaling=rope_scaling,
            rope_ext_factors=relax.prim_value(0),
            rotary_dim=config.head_dim,
            enable_disaggregation=False,
            dtype=self.kv_dtype,
            target=self.target,
        )

    def export_spec(self) -> nn.spec.ModuleSpec:
        packed = {"param_mode": "packed", "effect_mode": "none"}
        hidden = self.config.hidden_size
        spec = {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "prefill": {
                "input_embed": nn.spec.Tensor([1, "seq_len", hidden], "float32"),
                "kv_cache": nn.spec.Object(object_type=PagedKVCache),
                "$": packed,
            },
            "prefill_all_logits": {
                "input_embed": nn.spec.Tensor([1, "seq_len", hidden], "float32"),
                "kv_cache": nn.spec.Object(object_type=PagedKVCache),
                "$": packed,
            },
            "decode": {
                "input_embed": nn.spec.Tensor([1, 1, hidden], "float32"),
                "kv_cache": nn.spec.Object(object_type=PagedKVCache),
                "$": packed,
            },
            "batch_decode": {
                "input_embed": nn.spec.Tensor(["batch_size", 1, hidden], "float32"),
                "kv_cache": nn.spec.Object(object_type=PagedKVCache),
                "$": packed,
            },
            **self._cpu_only_spec(),
            "create_tir_paged_kv_cache": {
                "max_batch_size": int,
                "max_total_seq_len": int,
                "prefill_chunk_size": int,
                "page_size": int,
                "support_sliding_window": int,
                "$": {"param_mode": "none", "effect_mode": "none"},
            },
        }
        return nn.spec.ModuleSpec.from_raw(spec, self)

    def _cpu_only_spec(self) -> dict[str, Any]:
        """logit_stats is a parallel CPU kernel: a GPU library leaves it out (its sessions sample
        from the logits alone)."""
        if "gpu" in self.target.keys:
            return {}
        rows = nn.spec.Tensor(["rows", self.config.vocab_size], "float32")
        return {LOGIT_STATS: {"logits": rows, "$": {"param_mode": "none", "effect_mode": "none"}}}
