"""`inspect attention` in the terminal: one coloured cell per (query, key), token labels on both axes."""

from __future__ import annotations

import math

from rich.console import Console
from rich.style import Style
from rich.text import Text

from chatcli.inspectui.common import is_plain, visible

SHADES = "·.:-=+*#%@"  # plain mode: little to much attention (never blank: blank is the masked future)
# An inferno-like ramp: dark for little attention, bright for much.
RAMP = [(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21), (250, 193, 39), (252, 255, 164)]
LABEL = 10  # most characters of a row label


def ramp(x: float) -> tuple[int, int, int]:
    """Colour for x in [0, 1], interpolated along RAMP."""
    x = min(max(x, 0.0), 1.0) * (len(RAMP) - 1)
    i = min(int(x), len(RAMP) - 2)
    f = x - i
    return tuple(round(a + (b - a) * f) for a, b in zip(RAMP[i], RAMP[i + 1]))


def _label(text: str, width: int) -> str:
    s = visible(text)
    return s if len(s) <= width else s[: width - 1] + "…"


def layout(console: Console, n: int, label_w: int) -> tuple[int, int]:
    """(cell width, how many of the last tokens fit) for N tokens in the console's width."""
    room = console.width - label_w - 5
    for cell in (2, 1):
        if n * cell <= room:
            return cell, n
    return 1, max(1, room)


def render_heatmap(console: Console, probs, labels: list[str], title: str) -> None:
    """One head's pattern probs [T, T]: rows are queries, columns keys; brightness ∝ √p (so small weights show)."""
    plain = is_plain(console)
    T = len(labels)
    label_w = min(LABEL, max(len(visible(s)) for s in labels)) if labels else 1
    cell, keep = layout(console, T, label_w + 4)
    first = T - keep
    console.print(Text(title, style="" if plain else "bold"))
    if first:
        console.print(Text(f"(showing the last {keep} of {T} tokens to fit the width; --png shows them all)",
                           style="" if plain else "dim"))
    # Column labels written vertically, one character per line, above their column.
    col_labels = [_label(labels[j], 6) for j in range(first, T)]
    height = max(len(s) for s in col_labels)
    for r in range(height):
        line = " " * (label_w + 5)
        line += "".join((s[r] if r < len(s) else " ").ljust(cell) for s in col_labels)
        console.print(Text(line.rstrip(), style="" if plain else "dim"), overflow="crop", no_wrap=True)
    for i in range(first, T):
        row = Text(f"{i:>3} {_label(labels[i], label_w):<{label_w}} ", style="" if plain else "dim")
        for j in range(first, T):
            if j > i:
                row.append(" " * cell)  # the future: masked, exactly zero
                continue
            x = math.sqrt(max(float(probs[i, j]), 0.0))
            if plain:
                row.append(SHADES[min(int(x * len(SHADES)), len(SHADES) - 1)] * cell)
            else:
                row.append(" " * cell, style=Style(bgcolor=f"rgb({','.join(map(str, ramp(x)))})"))
        console.print(row, overflow="crop", no_wrap=True)
    scale = SHADES if plain else "dark → bright"
    console.print(Text(f"rows: query tokens, columns: the keys each one attends to; each row sums to 1; "
                       f"shade ∝ √p ({scale!r} = 0 … 1)", style="" if plain else "dim"))
