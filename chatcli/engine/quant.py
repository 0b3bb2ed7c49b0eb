"""Choose how each linear layer computes: prepacked dense weights (quant "none"), int8 or int4 weights.

Decoding a small model on a CPU is bound by the bytes of weight read per token, so fewer bits per weight is more
tokens per second. The layers themselves are in engine/linear.py.
"""

from __future__ import annotations

import torch
from torch import nn

from chatcli.engine import cpu
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.linear import (
    Bf16Linear,
    DynamicInt8Linear,
    Int4Linear,
    Int8Linear,
    PackedLinear,
    can_dynamic_int8,
    can_pack,
    int4_group_size,
)
from chatcli.engine.weights import release_file_pages

MODES = ("none", "int8", "int4")


def _targets(model: nn.Module, only: str | None = None, prefix: str = "") -> list[tuple[str, nn.Module, str, nn.Linear]]:
    """(path, parent, attribute, layer) for every plain nn.Linear in MODEL (the unembedding included), or only for
    the one that is MODEL's attribute ONLY. PREFIX is MODEL's own path in the whole model ("model.layers.3.")."""
    if only is not None:
        layer = getattr(model, only, None)
        return [(prefix + only, model, only, layer)] if isinstance(layer, nn.Linear) else []
    found = []
    for parent_path, parent in model.named_modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found.append((f"{prefix}{parent_path}{'.' if parent_path else ''}{name}", parent, name, child))
    return found


def pack(model: nn.Module, *, only: str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """Reorder every dense linear weight (or only MODEL.<ONLY>) into oneDNN's layout for DTYPE activations (default:
    the weights' own dtype), once; return MODEL. Where oneDNN cannot pack that dtype (bfloat16 on a CPU without
    AVX512 BW/VL/DQ or AVX-NE-CONVERT) the layers stay plain, and compute through F.linear."""
    if not can_pack(torch.float32):
        return model
    for _, parent, name, layer in _targets(model, only):
        want = dtype or layer.weight.dtype
        if want == torch.bfloat16 and not can_pack(want):
            setattr(parent, name, Bf16Linear.of(layer))
            continue
        # A tied embedding table the loader left in the file's 16-bit dtype is widened here, for this layer only.
        weight = layer.weight if dtype is None or layer.weight.dtype == dtype else layer.weight.to(dtype)
        # A tied unembedding is packed too, although the packed copy costs memory beside the embedding (113 MB for
        # SmolLM2 in float32, whose table then stays 16-bit): the plain GEMV streams it at half the speed (11.4
        # against 6.1 ms per token here).
        setattr(parent, name, PackedLinear(layer, weight=weight))
    release_file_pages(model)
    return model


# How the unembedding computes in each mode, chosen on SmolLM2-135M (fp32 reference, 8 chat prompts x 48 greedy
# tokens, teacher-forced top-1 agreement / mean KL): bf16 unquantized 97.7% / 0.001; int4 body with an int4 head 88% /
# 0.047, with a weight-only int8 head 96.1% / 0.002, with fbgemm's dynamic int8 head 96.1% / 0.005 at 1.9 ms instead
# of 4.5 ms per token; int8 body with the weight-only int8 head 95.3% / 0.006, with the dynamic head 92.4% / 0.010.
# The head's errors land directly on the logits, so it never goes below 8 bits.
# fbgemm's dynamic head pays only where the CPU has VNNI: without it, activations must keep to 7 bits (linear.py),
# and with 7 bits the int4 model's agreement fell from 97.9% to 95.1% and its perplexity rose +3.0% instead of +0.45%
# (tests/test_quant_real.py's measures, CHATCLI_CPU_ISA=avx2); the weight-only int8 head there: 98.6%, +0.28%.
LM_HEAD = {"int8": "int8", "int4": "dyn8"}


def lm_head_kind(mode: str) -> str:
    """How the unembedding computes under MODE on this CPU."""
    want = LM_HEAD[mode]
    return "int8" if want == "dyn8" and not cpu.info().int8_dot else want


def quantize(model: nn.Module, mode: str, *, lm_head: str | None = None, only: str | None = None,
             dtype: torch.dtype | None = None, prefix: str = "", stored=None, record: dict | None = None) -> nn.Module:
    """Replace MODEL's linear layers in place by MODE ("none": prepacked dense; "int8"; "int4"); return the model.

    lm_head overrides how the unembedding computes: "int8" (weight-only), "dyn8" (fbgemm's dynamic int8, where this
    build has it), "bf16" (a prepacked bfloat16 copy) or "int4". A layer the int4 kernel cannot take becomes int8.
    only: just MODEL.<ONLY> (the loader does the unembedding first); dtype: the activations' dtype (for "none").
    prefix: MODEL's path in the whole model, which names each layer for STORED and RECORD.
    stored: a quantstore.Stored whose tensors replace the quantization of the layers it holds and fits.
    record: filled with {path: new layer}, for quantstore to store.
    """
    if mode not in MODES:
        raise ModelLoadError(f"quantization {mode!r} is not supported; use one of {', '.join(MODES)}")
    if mode == "none":
        return pack(model, only=only, dtype=dtype)
    head = getattr(model, "lm_head", None)
    for path, parent, name, layer in _targets(model, only, prefix):
        want = (lm_head or lm_head_kind(mode)) if layer is head else mode
        new = _quantized(layer, want, None if stored is None else stored.layer(path))
        if record is not None:
            record[path] = new
        setattr(parent, name, new)
    model.quantization = mode
    release_file_pages(model)
    return model


def _quantized(layer: nn.Linear, want: str, stored: tuple[str, dict[str, torch.Tensor]] | None) -> nn.Module:
    """LAYER as WANT computes it ("int4", "int8", "dyn8" or "bf16"), from STORED (the class name a stored quantization
    recorded for it, and its tensors) when that is what would be built here and it fits, else quantized now."""
    group = int4_group_size(layer.in_features, layer.out_features) if want == "int4" else None
    if group:
        cls, args = Int4Linear, (group,)
    elif want == "dyn8" and can_dynamic_int8():
        cls, args = DynamicInt8Linear, ()
    elif want == "bf16":
        meta = nn.Linear(layer.in_features, layer.out_features, bias=False, device="meta")
        return PackedLinear(meta, weight=layer.weight.to(torch.bfloat16))
    else:
        cls, args = Int8Linear, ()
    if stored is not None and stored[0] == cls.__name__:
        try:
            return cls(layer, *args, stored=stored[1])
        except ValueError:  # made by other code or for another shape: quantize afresh
            pass
    return cls(layer, *args)

