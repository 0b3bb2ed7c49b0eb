"""Optional torch.compile of the decode step (`--compile auto|on|off`), with inductor's caches kept on disk.

Measured on the target machine (2 cores) with SmolLM2-135M (`chatcli bench --compile on`): the compiled step
decodes faster than eager (int4: 13 vs 17 ms of CPU per token on one thread, up to 99 vs 69 tok/s on two;
bfloat16: 46 vs 36 tok/s), but compiling costs 37-80 s in every new process, and freezing keeps a second copy of
dense weights (peak RSS 1.1 GB instead of 0.6). The on-disk caches do not help much: with freezing, inductor bypasses
its FX graph and AOT autograd caches (its counters say `fxgraph_cache_bypass`), so only the C++ kernel builds are
reused (63 s for a first bf16 compile, 46 s for the next); without freezing the prepacked oneDNN linears do not lower.
That never pays back in a one-shot `ask` and rarely in a chat, so "auto" stays eager; "on" is for long sessions
and the server.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

MODES = ("auto", "on", "off")


def wanted(mode: str) -> bool:
    """Whether MODE ("auto", "on" or "off") asks for compilation; "auto" does not, see the module docstring."""
    return mode == "on"


def use_cache_dir(cache_dir: str | Path | None) -> None:
    """Keep inductor's compiled kernels and graphs under CACHE_DIR (kernels built once are reused by later runs)."""
    if cache_dir is None:
        return
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir))
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True


def compile_decode(model: torch.nn.Module, cache_dir: str | Path | None = None) -> torch.nn.Module:
    """Route MODEL's one-token forward passes through torch.compile (dynamic positions, so one graph serves every
    step); prompts stay eager, since their shapes vary and they are few. Returns MODEL."""
    use_cache_dir(cache_dir)
    import torch._inductor.config as inductor

    inductor.freezing = True  # weights become constants: inductor prepacks them for oneDNN and folds what it can
    eager = model.forward
    compiled = torch.compile(eager, dynamic=True)

    def forward(tokens: torch.Tensor, start_pos: int = 0, last_only: bool = False) -> torch.Tensor:
        # Positions 0 and 1 stay eager: torch.compile specialises those two values, which would compile twice more.
        if tokens.shape[1] == 1 and start_pos >= 2:
            return compiled(tokens, start_pos)
        return eager(tokens, start_pos, last_only=last_only)

    model.forward = forward  # an instance attribute: nn.Module.__call__ finds it before the class's method
    model.compiled = True
    # Compile now rather than in the middle of the first reply, with one step at position 2 (slots 0 and 1 filled
    # first, so attention reads written values). Every prompt rewrites these slots before reading them, and
    # nothing is cached yet while a model is being loaded.
    with torch.inference_mode():
        for pos in (0, 1, 2):
            model(torch.zeros(1, 1, dtype=torch.long), pos)
    return model
