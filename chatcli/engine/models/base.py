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

from chatcli.engine.errors import ModelLoadError
from chatcli.engine.layers import causal_mask
from chatcli.engine.rope import apply_rope, rope_tables


class FamilyModel(nn.Module):
    """The contract. A family's Model also defines:

    __init__(config)                     build the modules as they compute (fused where the family fuses)
    sanitize(state) -> state             the checkpoint's tensors renamed and stacked into those modules' names
                                         (default: drop the copy of a tied head some exporters write)
    tie_weights(), prepare()             after loading: share the head with the embedding, precompute
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

    def sanitize(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The checkpoint's STATE (name -> tensor, all of it or one block's) as this model's modules name it. The
        loader calls it before loading, on meta tensors to check names and shapes and then block by block, so a family
        may only rename, drop and concatenate. Raises MissingTensors when parts of what it builds are absent."""
        if self.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # some exporters write the tied copy anyway; it is the same matrix
        return state

    def prepare(self) -> None:
        """After loading: precompute what the weights imply (Gemma's norm scales); nothing by default."""

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


class MissingTensors(ModelLoadError):
    """sanitize() could not build the tensors UNBUILT (the model's names) because the checkpoint lacks NAMES (its
    own names); STATE is the rest, sanitized."""

    def __init__(self, names: list[str], unbuilt: set[str], state: dict[str, torch.Tensor]):
        super().__init__(f"missing tensors: {', '.join(names)}")
        self.names, self.unbuilt, self.state = names, unbuilt, state


def stack_rows(state: dict[str, torch.Tensor], fused: dict[str, tuple[str, ...]]) -> dict[str, torch.Tensor]:
    """STATE with, wherever a module path P holds the parts fused[F] (P.q_proj.weight, P.k_proj.weight ...), their
    rows concatenated into P.F.weight (and likewise .bias), so one matrix product computes them all. A group with a
    part missing raises MissingTensors naming the missing parts, with the rest of STATE sanitized."""
    missing, unbuilt = [], set()
    for into, parts in fused.items():
        groups = {}  # (module path with its dot, "weight" or "bias") of every group that has any of its parts
        for name in state:
            for part in parts:
                prefix, sep, kind = f".{name}".rpartition(f".{part}.")
                if sep and "." not in kind:
                    groups[prefix[1:] + "." if prefix else "", kind] = None
        for prefix, kind in groups:
            names = [f"{prefix}{p}.{kind}" for p in parts]
            absent = [n for n in names if n not in state]
            rows = [state.pop(n) for n in names if n in state]
            if absent:  # named as the checkpoint names them; the parts present are then not reported as unexpected
                missing += absent
                unbuilt.add(f"{prefix}{into}.{kind}")
                continue
            if len({r.shape[1:] for r in rows}) > 1:
                shapes = ", ".join(f"{n} {list(r.shape)}" for n, r in zip(names, rows))
                raise ModelLoadError(f"{shapes}: these are stacked into one layer, so they must have the same columns")
            if rows[0].is_meta:  # the loader's check: the shape alone, since a meta torch.cat imports 800 modules (3 s)
                fused_rows = torch.empty((sum(r.shape[0] for r in rows), *rows[0].shape[1:]), dtype=rows[0].dtype, device="meta")
            else:
                fused_rows = torch.cat(rows)
            state[f"{prefix}{into}.{kind}"] = fused_rows
    if missing:
        raise MissingTensors(sorted(missing), unbuilt, state)
    return state


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
