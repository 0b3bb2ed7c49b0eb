"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 (as the reference does) and cast back."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class KVCache(nn.Module):
    """A preallocated key/value cache written by position: [B, n_kv_heads, max_seq_len, head_dim]."""

    def __init__(self, batch: int, n_kv_heads: int, max_seq_len: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, H, T, D] at start_pos and return the cache up to start_pos + T."""
        end = start_pos + k.shape[2]
        self.k[:, :, start_pos:end] = k
        self.v[:, :, start_pos:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


def causal_mask(start_pos: int, T: int, window: int | None = None) -> torch.Tensor | None:
    """Boolean mask [T, start_pos + T]: query i (at start_pos + i) sees key j when j <= start_pos + i (and within window)."""
    if T == 1 and window is None:
        return None  # a single new token may look at everything cached
    q = torch.arange(start_pos, start_pos + T).unsqueeze(1)
    k = torch.arange(start_pos + T).unsqueeze(0)
    mask = k <= q
    if window is not None:
        mask &= k > q - window
    return mask
