"""Qwen3 (dense): the Llama block with an RMSNorm on every q and k head before RoPE, no q/k/v biases, and an explicit
head_dim (Qwen3-4B: 32 heads of 128 over a hidden size of 2560, so it is not hidden_size / heads).

Everything else (fused projections, the KV cache, the one-token step, the compiled export) is the Llama family's;
this file only says where Qwen3 differs.
"""

from __future__ import annotations

import torch

from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.layers import RMSNorm
from chatcli.engine.models import llama
from chatcli.engine.rope import Rope


class Attention(llama.Attention):
    """Llama attention with per-head q_norm and k_norm (weights [head_dim], shared by all heads)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def position_qk(self, qk: torch.Tensor, rope: Rope) -> torch.Tensor:
        H = self.n_heads
        # The head axis is second to last in both the prefill [B, T, H+KV, D] and the one-token [B, H+KV, D] layout.
        normed = torch.cat([self.q_norm(qk[..., :H, :]), self.k_norm(qk[..., H:, :])], -2)
        return super().position_qk(normed, rope)


class Block(llama.Block):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.self_attn = Attention(config)


class Model(llama.Model):
    """Qwen3ForCausalLM; the head is tied or not as tie_word_embeddings says (0.6B to 4B tie it, 8B does not)."""

    def __init__(self, config: ModelConfig):
        if config.attention_bias:
            raise ModelLoadError("config.json: attention_bias is true, but Qwen3 has no q/k/v biases")
        if config.extra.get("use_sliding_window"):
            raise ModelLoadError("config.json: use_sliding_window is true; Qwen3's sliding-window layers are not supported")
        super().__init__(config)
        self.model.layers = torch.nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
