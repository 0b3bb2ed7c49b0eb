"""Rotary position embeddings in the rotate_half convention (the HF checkpoint layout needs no q/k permutation)."""

from __future__ import annotations

import math

import torch

from chatcli.engine.errors import ModelLoadError


def inv_frequencies(head_dim: int, rope_theta: float, rope_scaling: dict | None,
                    rotary_dim: int | None = None, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (float32, [rotary_dim/2]) and the attention scaling factor for the cos/sin tables.

    rotary_dim: the leading dimensions of each head that rotate (partial rotary, as Phi and GLM do); all by default.
    seq_len: the longest sequence the tables serve; longrope picks its long factors past the original context.
    """
    dim = rotary_dim or head_dim
    inv_freq = 1.0 / (rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
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
    if kind == "yarn":
        return _yarn(inv_freq, dim, rope_theta, scaling)
    if kind in ("longrope", "su"):
        return _longrope(inv_freq, dim, scaling, seq_len)
    raise ModelLoadError(f"config.json: rope_scaling type {kind!r} is not supported (supported: default, linear, llama3, yarn, longrope)")


def _longrope(inv_freq: torch.Tensor, dim: int, scaling: dict, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """LongRoPE (Phi-3): each frequency divided by its own searched factor, the short set within the original context
    and the long set past it; the logits are sharpened by sqrt(1 + ln(factor) / ln(original context)).

    seq_len picks the set: the long one when it passes the original context. (models/phi3.py switches between the
    two per chunk as transformers does.)"""
    old_ctx = scaling.get("original_max_position_embeddings")
    if not isinstance(old_ctx, int) or old_ctx < 1:
        raise ModelLoadError("config.json: longrope scaling needs original_max_position_embeddings (a positive integer)")
    chosen = "long_factor" if seq_len and seq_len > old_ctx else "short_factor"
    factors = scaling.get(chosen)
    if not isinstance(factors, list) or len(factors) != dim // 2 or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0 for f in factors):
        raise ModelLoadError(f"config.json: rope_scaling.{chosen} must be {dim // 2} positive numbers (one per rotary frequency)")
    factor = float(scaling.get("factor") or 1.0)
    attention = scaling.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(old_ctx))
    return inv_freq / torch.tensor(factors, dtype=torch.float32), float(attention)


def _yarn(inv_freq: torch.Tensor, dim: int, base: float, scaling: dict) -> tuple[torch.Tensor, float]:
    """YaRN (Peng et al. 2023): dimensions that turn many times within the original context keep their frequency,
    those that turn less than once are interpolated by `factor`, with a linear ramp between; the logits are sharpened
    by 0.1 ln(factor) + 1 (or mscale's ratio), which the cos/sin tables carry."""
    old_ctx = float(scaling["original_max_position_embeddings"])
    factor = float(scaling["factor"])

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = scaling.get("attention_factor")
    if attention is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
    fast, slow = float(scaling.get("beta_fast") or 32), float(scaling.get("beta_slow") or 1)

    def dimension_for(rotations: float) -> float:  # the dimension index that turns ROTATIONS times over old_ctx
        return dim * math.log(old_ctx / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = dimension_for(fast), dimension_for(slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # a ramp of zero width would divide by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1 where the dimension keeps its frequency (extrapolates), 0 where it is interpolated
    return inv_freq / factor * (1 - keep) + inv_freq * keep, float(attention)


def rope_tables(max_seq_len: int, head_dim: int, rope_theta: float, rope_scaling: dict | None = None,
                rotary_dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, float32 [max_seq_len, rotary_dim or head_dim], indexed by absolute position."""
    inv_freq, attention_scaling = inv_frequencies(head_dim, rope_theta, rope_scaling, rotary_dim, seq_len=max_seq_len)
    return cos_sin(torch.arange(max_seq_len, dtype=torch.float32), inv_freq, attention_scaling)


def cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, attention_scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin rows, float32 [T, 2 * len(inv_freq)], of POSITIONS: the one place the angles are computed, whether
    a family tabulates them up front or per step."""
    freqs = torch.outer(positions.float(), inv_freq)  # [T, head_dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, head_dim], in the rotate_half layout
    return emb.cos() * attention_scaling, emb.sin() * attention_scaling


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] along the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, D] by the cos/sin rows [T, D] of its positions."""
    return x * cos + rotate_half(x) * sin


# What the decode paths rotate with: cos [T, 1, rd], and the sine as its two halves [T, 1, rd/2] with rotate_half's
# sign folded in (-sin for the first half, +sin for the second), broadcast over the heads.
Rope = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def split_tables(cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype) -> Rope:
    """cos/sin tables [S, rd] as rotate() takes them, in DTYPE."""
    half = cos.shape[-1] // 2
    return cos.unsqueeze(1).to(dtype), -sin[:, None, :half].to(dtype), sin[:, None, half:].to(dtype)


def rotate(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """apply_rope's rotation of x [..., heads, D] in three ops and no concatenation: x*cos + [-x2, x1]*sin.

    Tables narrower than the head (partial rotary, as Phi-3 has) rotate its leading dimensions and pass the rest."""
    cos, neg_sin, sin = rope
    if cos.shape[-1] != x.shape[-1]:
        d = cos.shape[-1]
        return torch.cat([rotate(x[..., :d], rope), x[..., d:]], -1)
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], neg_sin)
    out[..., half:].addcmul_(x[..., :half], sin)
    return out
