"""Phi-3, Phi-3.5-mini and Phi-4-mini: the Llama block as the checkpoint stores it already fused (self_attn.qkv_proj,
mlp.gate_up_proj), RoPE over the first partial_rotary_factor of each head (Phi-4-mini: three quarters), longrope
scaling with its short and long factors, and Phi-3-mini-4k's sliding window.

The fused layers are the ones the Llama family builds for itself, so the checkpoint loads with nothing to stack, and
the one-token step, the compiled export and quantization are the Llama family's.
"""

from __future__ import annotations

from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.models import llama
from chatcli.engine.rope import Rope, rope_tables, split_tables


class Attention(llama.Attention):
    """Llama attention without biases and with Phi-3's window."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.window = window_of(config)


class Block(llama.Block):
    attention_class = Attention


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
    fused = {}  # the checkpoint's layers are fused already
    window_of = staticmethod(window_of)

    def __init__(self, config: ModelConfig):
        if config.attention_bias or config.mlp_bias:
            raise ModelLoadError("config.json: Phi-3 has no attention or MLP biases, but the config asks for them")
        super().__init__(config)
        self.rotary_dim = rotary_dim(config)
        self.rope_scaling = rope_scaling(config)
        self.switch_at: int | None = None  # the original context, when the tables reach past it

    def setup_cache(self, max_seq_len: int | None = None, batch: int = 1) -> None:
        """As Llama's, but longrope keeps both factor sets, as transformers switches between them: a chunk that ends
        within the original context rotates with the short factors, one that ends past it with the long factors
        (all its rows, those below the original context too). Keys already cached keep their rotation. The main
        tables hold short rows below the original context and long ones from it, which is exactly what a one-token
        step needs (so the compiled step is unchanged); rope_rows() takes the long set for a chunk that crosses."""
        super().setup_cache(max_seq_len, batch)
        c, scaling = self.config, self.rope_scaling
        old_ctx = scaling["original_max_position_embeddings"] if scaling else None
        self.switch_at = old_ctx if old_ctx is not None and self.max_seq_len > old_ctx else None
        if self.switch_at is None:
            return
        self.rope_long_cos = self.rope_cos.clone()  # what super() built for max_seq_len past old_ctx: the long set
        self.rope_long_neg_sin, self.rope_long_sin = self.rope_neg_sin.clone(), self.rope_sin.clone()
        cos, sin = rope_tables(old_ctx, c.head_dim, c.rope_theta, scaling, rotary_dim=self.rotary_dim)  # short: [old_ctx, rd]
        for table, short in zip((self.rope_cos, self.rope_neg_sin, self.rope_sin), split_tables(cos, sin, self.rope_cos.dtype)):
            table[:old_ctx] = short

    def rope_rows(self, start: int, end: int) -> Rope:
        if end - start > 1 and self.switch_at is not None and start < self.switch_at < end:
            return self.rope_long_cos[start:end], self.rope_long_neg_sin[start:end], self.rope_long_sin[start:end]
        return super().rope_rows(start, end)
