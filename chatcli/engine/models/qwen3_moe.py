"""Qwen3-MoE (Qwen3-30B-A3B, 235B-A22B): Qwen3's attention with a mixture of SwiGLU experts in place of the MLP.

Each token's router picks num_experts_per_tok of num_experts experts (softmax over all, top-k, renormed to sum 1 when
norm_topk_prob says so) and sums their outputs by those weights. Only the chosen experts run: the token-expert pairs
are grouped by expert, and each expert that got any computes its rows in one batch. A layer is sparse unless it is in
mlp_only_layers or (index + 1) is not a multiple of decoder_sparse_step; the others keep a dense MLP.

The experts are Llama MLPs (mlp.experts.E.gate_up_proj, stacked from the checkpoint's gate_proj and up_proj by the
Llama sanitize), plain linear layers, so --quant int8 and int4 cover them as they cover any linear layer. The router stays a bare weight, not a linear layer, so quantization
leaves it exact: a rounded router would pick other experts, a larger change than rounding an expert.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.models import llama, qwen3


def _int(config: ModelConfig, key: str, default: int, lo: int, hi: int) -> int:
    value = config.extra.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ModelLoadError(f"config.json: {key} is {value!r}; it must be an integer in [{lo}, {hi}]")
    return value


class Router(nn.Module):
    """The gate: expert scores from the hidden state; weight [num_experts, hidden] (mlp.gate.weight)."""

    def __init__(self, config: ModelConfig, num_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_experts, config.hidden_size))


class SparseMoE(nn.Module):
    """sum over the token's top-k experts of weight * expert(x)."""

    def __init__(self, config: ModelConfig, num_experts: int, top_k: int, expert_size: int, norm_topk: bool):
        super().__init__()
        self.top_k, self.norm_topk = top_k, norm_topk
        self.gate = Router(config, num_experts)
        expert_config = dataclasses.replace(config, intermediate_size=expert_size)
        self.experts = nn.ModuleList(llama.MLP(expert_config) for _ in range(num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [N, hidden]
        probs = F.linear(flat, self.gate.weight).softmax(-1, dtype=torch.float32)  # [N, experts]
        weights, chosen = probs.topk(self.top_k, -1)  # [N, k] each
        if self.norm_topk:
            weights /= weights.sum(-1, keepdim=True)
        weights = weights.to(x.dtype)
        # Group the N*k (token, expert) pairs by expert: one sort, and one batch per expert that was chosen.
        pairs = chosen.flatten()
        order = pairs.argsort(stable=True)
        counts = torch.bincount(pairs, minlength=len(self.experts)).tolist()
        # Each pair's output goes to its own row, then a token's k rows are summed: index_add_ into the tokens
        # instead went through CPU scatter_add_ at 24 ms a call (92 % of a decode step in a 64-expert model).
        out = flat.new_empty(pairs.shape[0], shape[-1])  # [N*k, hidden]
        w = weights.flatten()
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            slots = order[start : start + n]  # positions in the flattened [N*k] assignments
            start += n
            out[slots] = self.experts[e](flat[slots // self.top_k]) * w[slots, None]
        return out.view(-1, self.top_k, shape[-1]).sum(1).view(shape)


class Model(qwen3.Model):
    """Qwen3MoeForCausalLM."""

    @classmethod
    def exportable(cls, config: ModelConfig) -> bool:
        """No exported one-token step: which experts run is chosen per token in Python, which export cannot keep
        symbolic."""
        return False

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        n_experts = _int(config, "num_experts", 128, 1, 4096)
        top_k = _int(config, "num_experts_per_tok", 8, 1, n_experts)
        expert_size = _int(config, "moe_intermediate_size", 768, 1, 1 << 20)
        step = _int(config, "decoder_sparse_step", 1, 1, 1024)
        dense = config.extra.get("mlp_only_layers") or []
        if not isinstance(dense, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense):
            raise ModelLoadError(f"config.json: mlp_only_layers must be a list of layer indices, got {dense!r}")
        norm_topk = config.extra.get("norm_topk_prob", False)
        if not isinstance(norm_topk, bool):
            raise ModelLoadError(f"config.json: norm_topk_prob must be true or false, got {norm_topk!r}")
        for i, layer in enumerate(self.model.layers):
            if i not in dense and (i + 1) % step == 0:
                layer.mlp = SparseMoE(config, n_experts, top_k, expert_size, norm_topk)
