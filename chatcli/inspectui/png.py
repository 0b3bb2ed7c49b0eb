"""`inspect attention --png`: a real image of the heads of one layer (matplotlib, imported only when asked)."""

from __future__ import annotations

import math
from pathlib import Path

from chatcli.inspectui.common import visible


def save_attention_png(path: str | Path, probs, heads: list[int], labels: list[str], title: str) -> Path:
    """Write a grid of HEADS' patterns (probs [H, T, T]) with token labels; one head gets a single large plot."""
    from chatcli.optional import require

    matplotlib = require("matplotlib", "inspect attention --png", "plot")
    matplotlib.use("Agg")  # no display needed; also safe in a headless terminal
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import PowerNorm

    n = len(heads)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    T = len(labels)
    size = 4.2 if n > 1 else max(6.0, 0.35 * T)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.6), squeeze=False)
    ticks = [visible(s)[:12] for s in labels]
    step = max(1, math.ceil(T / (24 if n == 1 else 14)))  # thin the labels so they stay readable
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        data = np.asarray(probs[heads[k]], dtype=np.float32)
        future = np.triu(np.ones_like(data, dtype=bool), k=1)
        image = ax.imshow(np.ma.masked_array(data, future), cmap="inferno", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0),
                          interpolation="nearest")
        ax.set_facecolor("#dddddd")  # the masked future, visibly different from zero attention
        ax.set_title(f"head {heads[k]}", fontsize=10)
        idx = list(range(0, T, step))
        ax.set_xticks(idx, [ticks[i] for i in idx], rotation=90, fontsize=7)
        ax.set_yticks(idx, [ticks[i] for i in idx], fontsize=7)
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    cax = fig.add_axes((0.88, 0.15, 0.015, 0.7))
    fig.colorbar(image, cax=cax, label="attention probability (√ scale)")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
