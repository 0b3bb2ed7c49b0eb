"""Rotary position embeddings in the rotate_half convention (the HF checkpoint layout needs no q/k permutation)."""

from __future__ import annotations

import math

import torch

from chatcli.engine.errors import ModelLoadError


def inv_frequencies(head_dim: int, rope_theta: float, rope_scaling: dict | None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (float32, [head_dim/2]) and the attention scaling factor for the cos/sin tables."""
    inv_freq = 1.0 / (rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    scaling = dict(rope_scaling or {})
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / float(scaling["factor"]), 1.0
    if kind == "llama3":
        # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between interpolated smoothly.
        factor = float(scaling["factor"])
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        old_ctx = float(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(is_mid, mid, scaled), 1.0
    raise ModelLoadError(f"config.json: rope_scaling type {kind!r} is not supported (supported: default, linear, llama3)")


def rope_tables(max_seq_len: int, head_dim: int, rope_theta: float, rope_scaling: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, float32 [max_seq_len, head_dim], indexed by absolute position."""
    inv_freq, attention_scaling = inv_frequencies(head_dim, rope_theta, rope_scaling)
    positions = torch.arange(max_seq_len, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)  # [S, head_dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [S, head_dim]
    return emb.cos() * attention_scaling, emb.sin() * attention_scaling


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] along the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, D] by the cos/sin rows [T, D] of its positions."""
    return x * cos + rotate_half(x) * sin
