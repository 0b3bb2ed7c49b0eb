"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 (as the reference does) and cast back."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel instead of eight ops; it accumulates in float32 for bfloat16 input, as the reference does.
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


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


class FusedLinear(nn.Linear):
    """Several projections of the same input stacked row-wise, so a decode step runs one GEMV instead of several."""

    @classmethod
    def of(cls, parts: list[nn.Linear]) -> FusedLinear:
        """Stack PARTS (same in_features) into one linear layer; the parts' own weights are then free to go."""
        out = sum(p.out_features for p in parts)
        has_bias = [p.bias is not None for p in parts]
        fused = cls(parts[0].in_features, out, bias=any(has_bias), device="meta")
        fused.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
        if any(has_bias):
            biases = [p.bias if p.bias is not None else p.weight.new_zeros(p.out_features) for p in parts]
            fused.bias = nn.Parameter(torch.cat(biases), requires_grad=False)
        return fused


class RowSlice(nn.Module):
    """Rows [start, stop) of a fused projection, standing where the original nn.Linear stood.

    .weight and .bias read through to the fused layer (dequantized if it was quantized), and calling it computes
    that projection alone, so code that walks `self_attn.q_proj` keeps working after fusion. It owns no parameters.
    """

    def __init__(self, owner: nn.Module, attr: str, start: int, stop: int):
        super().__init__()
        # Kept outside the module tree: the parameters belong to owner.<attr>, which quantization may replace.
        object.__setattr__(self, "_owner", owner)
        self.attr, self.start, self.stop = attr, start, stop
        self.in_features, self.out_features = getattr(owner, attr).in_features, stop - start

    @property
    def fused(self) -> nn.Module:
        """The fused layer these rows live in."""
        return getattr(self._owner, self.attr)

    @property
    def weight(self) -> torch.Tensor:
        """This projection's weight [out_features, in_features] (float, dequantized when needed)."""
        fused = self.fused
        w = fused.dequantized_weight() if hasattr(fused, "dequantized_weight") else fused.weight
        return w[self.start : self.stop]

    @property
    def bias(self) -> torch.Tensor | None:
        """This projection's bias, or None."""
        b = self.fused.bias
        return None if b is None else b[self.start : self.stop]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.attr}[{self.start}:{self.stop}], in_features={self.in_features}, out_features={self.out_features}"


def fuse_projections(owner: nn.Module, names: list[str], fused_name: str) -> None:
    """Replace owner.<names> by one FusedLinear owner.<fused_name>, leaving a RowSlice under each old name."""
    parts = [getattr(owner, n) for n in names]
    setattr(owner, fused_name, FusedLinear.of(parts))
    start = 0
    for name, part in zip(names, parts):
        setattr(owner, name, RowSlice(owner, fused_name, start, start + part.out_features))
        start += part.out_features
