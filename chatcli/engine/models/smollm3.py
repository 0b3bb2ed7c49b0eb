"""SmolLM3: the Llama block, but every no_rope_layer_interval-th layer (the 4th, 8th, ...) attends without RoPE
(NoPE): no_rope_layers[i] is 1 where layer i rotates q and k and 0 where it does not.

The rest (fused projections, the KV cache, the one-token step, the compiled export) is the Llama family's.
"""

from __future__ import annotations

from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.models import llama


def rope_layers(config: ModelConfig) -> list[bool]:
    """Per layer, whether it uses RoPE: config.json's no_rope_layers, else transformers' default of one NoPE layer
    every no_rope_layer_interval layers."""
    n = config.num_hidden_layers
    flags = config.extra.get("no_rope_layers")
    if flags is None:
        interval = config.extra.get("no_rope_layer_interval", 4)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ModelLoadError(f"config.json: no_rope_layer_interval is {interval!r}; it must be a positive integer")
        return [(i + 1) % interval != 0 for i in range(n)]
    if not isinstance(flags, list) or len(flags) != n or any(f not in (0, 1) or isinstance(f, float) for f in flags):
        raise ModelLoadError(f"config.json: no_rope_layers must list 0 or 1 for each of the {n} layers, got {flags!r}")
    return [bool(f) for f in flags]


class Model(llama.Model):
    """SmolLM3ForCausalLM (SmolLM3-3B: tied head)."""

    def __init__(self, config: ModelConfig):
        if config.extra.get("use_sliding_window"):
            raise ModelLoadError("config.json: use_sliding_window is true; SmolLM3's sliding-window layers are not supported")
        super().__init__(config)
        for layer, uses_rope in zip(self.model.layers, rope_layers(config)):
            layer.self_attn.use_rope = uses_rope

