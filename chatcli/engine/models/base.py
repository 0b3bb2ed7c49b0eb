"""What every family provides, so the generic code (loader, generate, compile, introspect, the local backend) never
asks which family it holds.

A family is one module in this package with a `Model(FamilyModel)` and one line in `ARCHITECTURES`. The defaults
below are what a plain full-attention family needs; a family overrides what differs (Gemma 3's ring caches, its
exportability, its attention math for introspection). The eager attention helpers at the end are the reference
math families use for `attention_probs`, kept apart from their fused fast paths.
"""

from __future__ import annotations

import torch
from torch import nn

from chatcli.engine.layers import causal_mask
from chatcli.engine.rope import apply_rope, rope_tables


class FamilyModel(nn.Module):
    """The contract. A family's Model also defines:

    __init__(config)                     build the modules, named as the checkpoint names its tensors
    tie_weights(), prepare()             after loading: share the head with the embedding, fuse or precompute
    make_cache(batch, max_len)           a ModelCache (engine.cache) of its layers' caches for BATCH rows
    setup_cache(max_seq_len, batch=1)    its RoPE tables and its own cache (sets max_seq_len and .cache)
    forward(tokens [B, T], start_pos, last_only=False, cache=None) -> float32 logits [B, T or 1, V]
                                         start_pos an int (every row there) or a tensor [B] (one token per row,
                                         each at its own position: batched decode); cache: default its own
    body(tokens, start_pos, cache, ...)  forward up to the final norm (what engine.compile exports)
    unembed(hidden) -> float32 logits    the last step, kept apart so an exported graph can stop before it
    compute_dtype                        the activations' dtype
    """

    config = None
    max_seq_len: int = 0
    cache = None  # the ModelCache forward uses when none is passed in (made by setup_cache)

    @classmethod
    def exportable(cls, config) -> bool:
        """Whether engine.compile can export this family's one-token step for CONFIG (no by default)."""
        return False

    def max_reusable_prefix(self, cached_len: int, want: int) -> int:
        """How many of CACHED_LEN positions of its own cache a new prompt sharing WANT tokens with them may keep: a
        full cache keeps them all; a ring cache (sliding windows) only what it still holds."""
        return self.cache.reusable(0, min(cached_len, want))

    def decode_extras(self, pos: int) -> list[torch.Tensor]:
        """Inputs besides the token and the caches that an exported one-token step at POS takes: none by default."""
        return []

    def decode_done(self, last: int) -> None:
        """Bookkeeping after an exported one-token step ending at position LAST: none by default."""

    def attention_probs(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities [B, H, T, T] of the attention module ATTN given its input X [B, T, hidden] at
        positions 0..T-1, recomputed the eager way (introspection; the fast path never materialises them)."""
        raise NotImplementedError(f"attention probabilities for model_type {self.config.model_type!r} are not implemented")


# -- eager attention math, for attention_probs --------------------------------------------------------------------

def split_heads(x: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """[B, T, n*d] -> [B, n, T, d]."""
    B, T, _ = x.shape
    return x.view(B, T, n, d).transpose(1, 2)


def rope_from_zero(x: torch.Tensor, theta: float, scaling: dict | None) -> torch.Tensor:
    """x [B, H, T, D] rotated for positions 0..T-1 (tables built here, independent of the model's cached layout)."""
    cos, sin = rope_tables(x.shape[2], x.shape[3], theta, scaling)  # [T, D] float32
    return apply_rope(x.float(), cos, sin)


def eager_probs(q: torch.Tensor, k: torch.Tensor, n_heads: int, scale: float, window: int | None) -> torch.Tensor:
    """softmax(q·kᵀ·scale + causal mask) in float32 for q [B, H, T, D], k [B, KV, T, D]; query head h reads kv head
    h // group, as grouped-query attention does."""
    k = k.repeat_interleave(n_heads // k.shape[1], dim=1)
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    T = scores.shape[-1]
    mask = causal_mask(0, T, window)
    if mask is None:  # a single token sees only itself
        mask = torch.ones(1, 1, dtype=torch.bool)
    return scores.masked_fill(~mask, float("-inf")).softmax(-1)
