"""Attention probabilities softmax(QKᵀ/√d + causal mask), per layer and head, recomputed from the model's own inputs.

The model runs its normal forward once with a pre-hook on each attention module that records its input (the normed
hidden states); the probabilities are then recomputed from the module's own projections and norms, with RoPE tables
built here from the config. So nothing in the architecture modules changes, their fast fused attention stays as it
is, and only the per-architecture math below (mirroring transformers' eager attention) has to know the family.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from chatcli.engine.layers import causal_mask
from chatcli.engine.rope import apply_rope, cos_sin, inv_frequencies, rope_tables


def _heads(x: torch.Tensor, n: int, d: int) -> torch.Tensor:
    B, T, _ = x.shape
    return x.view(B, T, n, d).transpose(1, 2)  # [B, n, T, d]


def _softmax_masked(scores: torch.Tensor, window: int | None) -> torch.Tensor:
    """Row softmax of scores [B, H, T, T] under the causal (and sliding-window) mask, in float32."""
    T = scores.shape[-1]
    mask = causal_mask(0, T, window)
    if mask is None:  # a single token sees only itself
        mask = torch.ones(1, 1, dtype=torch.bool)
    return scores.float().masked_fill(~mask, float("-inf")).softmax(-1)


def _scores(q: torch.Tensor, k: torch.Tensor, n_heads: int, scale: float) -> torch.Tensor:
    """q [B, H, T, D] · k [B, KV, T, D] -> scores [B, H, T, T] in float32; query head h reads kv head h // group."""
    k = k.repeat_interleave(n_heads // k.shape[1], dim=1)
    return (q.float() @ k.float().transpose(-1, -2)) * scale


def _rope(x: torch.Tensor, theta: float, scaling: dict | None) -> torch.Tensor:
    """x [B, H, T, D] rotated for positions 0..T-1 (tables built here, independent of the model's cached layout)."""
    cos, sin = rope_tables(x.shape[2], x.shape[3], theta, scaling)  # [T, D] float32
    return apply_rope(x.float(), cos, sin)


def _llama_like(model, attn, q: torch.Tensor, k: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Softmax of q [B, T, H*D] against k [B, T, KV*D] as the Llama block compares them: RoPE (unless the layer is a
    NoPE one), scale 1/√head_dim; [B, H, T, T]."""
    c = model.config
    q, k = _heads(q, attn.n_heads, attn.head_dim), _heads(k, attn.n_kv_heads, attn.head_dim)
    if attn.use_rope:
        # The model's own rope: its scaling and its rotary width (Phi-3 rotates part of each head); one chunk of T
        # positions from 0, which is what longrope picks its factor set by.
        rd, T = model.rotary_dim, q.shape[2]
        inv_freq, scale = inv_frequencies(c.head_dim, c.rope_theta, model.rope_scaling, rd, seq_len=T)
        cos, sin = cos_sin(torch.arange(T), inv_freq, scale)
        q, k = (torch.cat([apply_rope(t[..., :rd].float(), cos, sin), t[..., rd:].float()], -1) for t in (q, k))
    return _softmax_masked(_scores(q, k, attn.n_heads, attn.head_dim**-0.5), window)


def llama_probs(model, attn, x: torch.Tensor) -> torch.Tensor:
    """Llama, Mistral, Qwen2, SmolLM3 (whose NoPE layers skip RoPE), Phi-3 (views of its fused qkv_proj): q, k from
    the projections, the layer's sliding window if it has one."""
    return _llama_like(model, attn, attn.q_proj(x), attn.k_proj(x), attn.window)


def qwen3_probs(model, attn, x: torch.Tensor) -> torch.Tensor:
    """Qwen3: q and k RMS-normed per head before RoPE."""
    B, T, _ = x.shape
    q = attn.q_norm(attn.q_proj(x).view(B, T, attn.n_heads, attn.head_dim)).view(B, T, -1)
    k = attn.k_norm(attn.k_proj(x).view(B, T, attn.n_kv_heads, attn.head_dim)).view(B, T, -1)
    return _llama_like(model, attn, q, k)


def olmo2_probs(model, attn, x: torch.Tensor) -> torch.Tensor:
    """OLMo 2: q and k RMS-normed over the whole projection before RoPE."""
    return _llama_like(model, attn, attn.q_norm(attn.q_proj(x)), attn.k_norm(attn.k_proj(x)))


def gemma3_probs(model, attn, x: torch.Tensor) -> torch.Tensor:
    """Gemma 3: per-head RMS-normed q and k, RoPE with the layer kind's base (local or global), scale
    query_pre_attn_scalar^-½, and a sliding window on local layers; [B, H, T, T]."""
    c = model.config
    theta, scaling = (c.rope_local_base_freq or 10000.0, None) if attn.is_local else (c.rope_theta, c.rope_scaling)
    q = _rope(attn.q_norm(_heads(attn.q_proj(x), attn.n_heads, attn.head_dim)), theta, scaling)
    k = _rope(attn.k_norm(_heads(attn.k_proj(x), attn.n_kv_heads, attn.head_dim)), theta, scaling)
    scale = (c.query_pre_attn_scalar or 256) ** -0.5
    return _softmax_masked(_scores(q, k, attn.n_heads, scale), model.window if attn.is_local else None)


# model_type -> function(model, attention module, the module's input [B, T, hidden]) -> probabilities [B, H, T, T]
ATTENTION_PROBS: dict[str, Callable[[torch.nn.Module, torch.nn.Module, torch.Tensor], torch.Tensor]] = {
    "llama": llama_probs,
    "mistral": llama_probs,
    "qwen2": llama_probs,
    "qwen3": qwen3_probs,
    "qwen3_moe": qwen3_probs,  # Qwen3's attention; only the MLP differs
    "olmo2": olmo2_probs,
    "smollm3": llama_probs,
    "phi3": llama_probs,
    "gemma3": gemma3_probs,
    "gemma3_text": gemma3_probs,
}


def attention_probs(model, ids: list[int], layers: list[int] | None = None) -> dict[int, torch.Tensor]:
    """{layer: probabilities [heads, T, T]} for IDS at positions 0..T-1 (row i: how query i spreads over keys 0..i)."""
    kind = model.config.model_type
    probs_fn = ATTENTION_PROBS.get(kind)
    if probs_fn is None:
        raise NotImplementedError(f"attention probabilities for model_type {kind!r} are not implemented")
    blocks = model.model.layers
    wanted = range(len(blocks)) if layers is None else layers
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for i in wanted:
        def hook(module, args, i=i):
            captured[i] = args[0]  # the normed hidden states the attention module was given

        hooks.append(blocks[i].self_attn.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model(torch.tensor([ids], dtype=torch.long), 0)
            return {i: probs_fn(model, blocks[i].self_attn, captured[i])[0] for i in wanted}
    finally:
        for h in hooks:
            h.remove()
