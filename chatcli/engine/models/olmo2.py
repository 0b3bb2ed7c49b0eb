"""OLMo 2: the Llama block with its norms moved after the sublayers (x + norm(attn(x)), then h + norm(mlp(h))) and
an RMSNorm over the whole q and the whole k projection (all heads at once, not per head as Qwen3 has) before RoPE.

The rest (fused projections, the KV cache, the one-token step, the compiled export) is the Llama family's.
"""

from __future__ import annotations

import torch

from chatcli.engine.cache import KVCache
from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.layers import RMSNorm
from chatcli.engine.models import llama
from chatcli.engine.rope import Rope


class Attention(llama.Attention):
    """Llama attention with q_norm [H*D] and k_norm [KV*D] over the whole projections."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.q_norm = RMSNorm(self.n_heads * self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.n_kv_heads * self.head_dim, config.rms_norm_eps)

    def position_qk(self, qk: torch.Tensor, rope: Rope) -> torch.Tensor:
        H, D = self.n_heads, self.head_dim
        lead = qk.shape[:-2]  # [B, T] in prefill, [B] for one token; the heads are the last two axes either way
        q = self.q_norm(qk[..., :H, :].reshape(*lead, -1)).view(*lead, H, D)
        k = self.k_norm(qk[..., H:, :].reshape(*lead, -1)).view(*lead, -1, D)
        return super().position_qk(torch.cat([q, k], -2), rope)


class Block(llama.Block):
    """x + post_attention_layernorm(attn(x)), then h + post_feedforward_layernorm(mlp(h)): no norm before either."""

    attention_class = Attention

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        del self.input_layernorm
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: Rope, start_pos: int | torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache) -> torch.Tensor:
        h = self.post_attention_layernorm(self.self_attn(x, rope, start_pos, mask, cache))
        h += x
        out = self.post_feedforward_layernorm(self.mlp(h))
        out += h
        return out


class Model(llama.Model):
    """Olmo2ForCausalLM (OLMo-2-0425-1B, 7B, 13B: untied heads)."""

    block_class = Block

    def __init__(self, config: ModelConfig):
        if config.attention_bias:
            raise ModelLoadError("config.json: attention_bias is true, but OLMo 2 has no attention biases")
        super().__init__(config)
