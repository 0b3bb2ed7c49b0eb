"""Where a model's parameters are (by component), and what a context's KV cache costs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

COMPONENTS = ("embedding", "attention", "MLP", "norms", "unembedding", "other")


def component_of(name: str) -> str:
    """The component a checkpoint parameter name belongs to (norms inside attention, like q_norm, count as norms)."""
    parts = name.split(".")
    owner = parts[-2] if len(parts) >= 2 else ""
    if "embed_tokens" in parts:
        return "embedding"
    if parts[0] == "lm_head":
        return "unembedding"
    if owner.endswith("norm") or owner.endswith("layernorm"):
        return "norms"
    if any(p in ("self_attn", "attention", "attn") for p in parts):
        return "attention"
    if any(p in ("mlp", "feed_forward") for p in parts):
        return "MLP"
    return "other"


@dataclass
class ParamReport:
    """Parameter counts per component; a tied unembedding is counted once, under embedding."""

    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    tied: bool = False
    dtype: torch.dtype = torch.float32
    bytes: int = 0


def parameter_report(model) -> ParamReport:
    """Count every unique parameter tensor once (named_parameters skips the shared, tied unembedding)."""
    report = ParamReport(counts={c: 0 for c in COMPONENTS}, dtype=model.compute_dtype)
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        report.counts[component_of(name)] += p.numel()
        report.total += p.numel()
        report.bytes += p.numel() * p.element_size()
    # The config's word, not the tensors': a packed or quantized head keeps its own copy, but the checkpoint has one.
    report.tied = bool(model.config.tie_word_embeddings)
    if not report.counts["other"]:
        del report.counts["other"]
    return report


def kv_cache_bytes(model, context: int | None = None, dtype: torch.dtype | None = None) -> tuple[int, int]:
    """(bytes for CONTEXT positions, context) of the KV cache the engine would allocate, measured on a meta-device copy.

    Built on the meta device so nothing is allocated; it measures the architecture's own cache layout (an
    architecture whose local layers keep only a window allocates less than layers × 2 × kv_heads × head_dim × context).
    """
    config = model.config
    context = context or config.max_position_embeddings
    dtype = dtype or model.compute_dtype
    with torch.device("meta"):
        ghost = type(model)(config)
        ghost.to(dtype)
        ghost.setup_cache(context)
    total = ghost.cache.nbytes()
    return total, context
