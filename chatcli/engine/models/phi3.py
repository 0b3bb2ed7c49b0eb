"""Phi-3, Phi-3.5-mini and Phi-4-mini: the Llama block as the checkpoint stores it already fused (self_attn.qkv_proj,
mlp.gate_up_proj), RoPE over the first partial_rotary_factor of each head (Phi-4-mini: three quarters), longrope
scaling with its short and long factors, and Phi-3-mini-4k's sliding window.

The fused layers are the ones the Llama family builds for itself after loading, so the one-token step, the compiled
export and quantization are its own; q_proj/k_proj/v_proj and gate_proj/up_proj stand as views for introspection.
"""

from __future__ import annotations

from torch import nn

from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.layers import RowSlice
from chatcli.engine.models import llama


class Attention(llama.Attention):
    """Llama attention whose q/k/v live in one qkv_proj [(H + 2KV) * D, hidden] in the checkpoint."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        H, KV, D = self.n_heads, self.n_kv_heads, self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, (H + 2 * KV) * D, bias=False)
        self.q_proj = RowSlice(self, "qkv_proj", 0, H * D)
        self.k_proj = RowSlice(self, "qkv_proj", H * D, (H + KV) * D)
        self.v_proj = RowSlice(self, "qkv_proj", (H + KV) * D, (H + 2 * KV) * D)
        self.o_proj = nn.Linear(H * D, config.hidden_size, bias=False)
        self.window = window_of(config)


class MLP(llama.MLP):
    """SwiGLU with gate and up stacked in one gate_up_proj [2 * intermediate, hidden], gate first."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        n = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * n, bias=False)
        self.gate_proj = RowSlice(self, "gate_up_proj", 0, n)
        self.up_proj = RowSlice(self, "gate_up_proj", n, 2 * n)
        self.down_proj = nn.Linear(n, config.hidden_size, bias=False)


class Block(llama.Block):
    attention_class, mlp_class = Attention, MLP


def window_of(config: ModelConfig) -> int | None:
    """Phi-3-mini-4k attends over its last 2047 positions; Phi-3.5 and Phi-4-mini give a window past their context,
    which is no window (and keeps the compiled step, which cannot take one)."""
    w = config.sliding_window
    return w if w is not None and w < config.max_position_embeddings else None


def rope_scaling(config: ModelConfig) -> dict | None:
    """rope_scaling completed as transformers completes it: the original context from config.json's top level, and
    the factor as the ratio of the two contexts when it is not given ("su", Phi-3's first name for longrope, is it)."""
    scaling = dict(config.rope_scaling or {})
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return None
    if kind not in ("longrope", "su"):
        raise ModelLoadError(f"config.json: rope_scaling type {kind!r} is not one Phi-3 uses (supported: longrope)")
    old_ctx = scaling.get("original_max_position_embeddings", config.extra.get("original_max_position_embeddings", 4096))
    if isinstance(old_ctx, bool) or not isinstance(old_ctx, int) or old_ctx < 1:
        raise ModelLoadError(f"config.json: original_max_position_embeddings is {old_ctx!r}; it must be a positive integer")
    scaling["original_max_position_embeddings"] = old_ctx
    scaling.setdefault("factor", config.max_position_embeddings / old_ctx)
    return {**scaling, "rope_type": "longrope"}


def rotary_dim(config: ModelConfig) -> int:
    """How many leading dimensions of each head rotate: head_dim * partial_rotary_factor (all by default)."""
    factor = config.extra.get("partial_rotary_factor", (config.rope_scaling or {}).get("partial_rotary_factor", 1.0))
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        raise ModelLoadError(f"config.json: partial_rotary_factor is {factor!r}; it must be a number in (0, 1]")
    dim = int(config.head_dim * factor)
    if dim < 2 or dim % 2:
        raise ModelLoadError(f"config.json: partial_rotary_factor {factor} leaves {dim} rotary dimensions of {config.head_dim}; it must be even")
    return dim


class Model(llama.Model):
    """Phi3ForCausalLM (Phi-4-mini ties its head; Phi-3 and 3.5 do not)."""

    block_class = Block
    window_of = staticmethod(window_of)

    def __init__(self, config: ModelConfig):
        if config.attention_bias or config.mlp_bias:
            raise ModelLoadError("config.json: Phi-3 has no attention or MLP biases, but the config asks for them")
        super().__init__(config)
        self.rotary_dim = rotary_dim(config)
        self.rope_scaling = rope_scaling(config)
