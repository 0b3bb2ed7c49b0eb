"""The Llama family (llama, mistral, qwen2): pre-norm blocks of grouped-query attention with RoPE and a SwiGLU MLP.

Parameter names are the checkpoint's own (model.layers.N.self_attn.q_proj ...), so weights load without a rename map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.engine.config import ModelConfig
from chatcli.engine.layers import KVCache, RMSNorm, causal_mask
from chatcli.engine.rope import apply_rope, rope_tables


class Attention(nn.Module):
    """Causal self-attention with grouped-query heads, RoPE and a KV cache."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        # qwen2 always has q/k/v biases; llama and mistral have them when attention_bias says so.
        qkv_bias = config.attention_bias or config.model_type == "qwen2"
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)
        self.window = config.sliding_window if config.model_type == "mistral" else None
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, KV, T, D]
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = self.cache.update(start_pos, k, v)  # [B, KV, start_pos+T, D]
        mask = causal_mask(start_pos, T, self.window)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv_heads != self.n_heads)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))  # [B, T, hidden]


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        bias = config.mlp_bias
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """x + attn(norm(x)), then h + mlp(norm(h))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, start_pos)
        return h + self.mlp(self.post_attention_layernorm(h))


class Backbone(nn.Module):
    """Embedding, blocks and the final norm: the `model.` prefix of the checkpoint."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Model(nn.Module):
    """tokens -> embedding -> blocks -> norm -> unembedding -> logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.max_seq_len = 0

    def tie_weights(self) -> None:
        """Share the unembedding with the embedding when the checkpoint says so."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def setup_cache(self, max_seq_len: int | None = None, batch: int = 1) -> None:
        """Allocate the KV caches and RoPE tables for up to max_seq_len positions (default: the model's context)."""
        c = self.config
        self.max_seq_len = max_seq_len or c.max_position_embeddings
        dtype = self.model.embed_tokens.weight.dtype
        for layer in self.model.layers:
            layer.self_attn.cache = KVCache(batch, c.num_key_value_heads, self.max_seq_len, c.head_dim, dtype)
        cos, sin = rope_tables(self.max_seq_len, c.head_dim, c.rope_theta, c.rope_scaling)
        self.register_buffer("rope_cos", cos.to(dtype), persistent=False)
        self.register_buffer("rope_sin", sin.to(dtype), persistent=False)

    def forward(self, tokens: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """Logits (float32) [B, T, vocab] for tokens [B, T] placed at positions start_pos..start_pos+T-1."""
        T = tokens.shape[1]
        cos, sin = self.rope_cos[start_pos : start_pos + T], self.rope_sin[start_pos : start_pos + T]  # [T, D]
        x = self.model.embed_tokens(tokens)  # [B, T, hidden]
        for layer in self.model.layers:
            x = layer(x, cos, sin, start_pos)
        return self.lm_head(self.model.norm(x)).float()
