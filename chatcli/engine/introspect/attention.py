"""Attention probabilities softmax(QKᵀ/√d + causal mask), per layer and head, recomputed from the model's own inputs.

The model runs its normal forward once with a pre-hook on each attention module that records its input (the normed
hidden states); the probabilities are then recomputed from the module's own projections and norms, with RoPE tables
built here from the config. So the fast fused attention stays as it is; each family's own `attention_probs`
(engine/models/base.py's contract, mirroring transformers' eager attention) holds the math that knows the family.
"""

from __future__ import annotations

import torch


def attention_probs(model, ids: list[int], layers: list[int] | None = None) -> dict[int, torch.Tensor]:
    """{layer: probabilities [heads, T, T]} for IDS at positions 0..T-1 (row i: how query i spreads over keys 0..i)."""
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
            return {i: model.attention_probs(blocks[i].self_attn, captured[i])[0] for i in wanted}
    finally:
        for h in hooks:
            h.remove()
