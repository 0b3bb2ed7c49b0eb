"""Shared pieces: the console, visible token text, and bars drawn with block characters."""

from __future__ import annotations

import sys

from rich.console import Console

from chatcli.ui.console import plain_wanted
from chatcli.ui.sanitize import sanitize

EIGHTHS = " ▏▎▍▌▋▊▉█"


def make_console(plain: bool = False, file=None, width: int | None = None, colour: bool = False) -> Console:
    """A console that never parses markup; without colour when plain is wanted (flag, NO_COLOR, a pipe).

    colour=True forces a colour terminal (for a file that is not a tty, e.g. to record what a terminal would get).
    """
    file = file or sys.stdout
    plain = not colour and plain_wanted(plain, file)
    return Console(file=file, markup=False, emoji=False, highlight=False, width=width, soft_wrap=False,
                   force_terminal=True if colour else False if plain else None, no_color=plain,
                   color_system=None if plain else "truecolor" if colour else "auto")


def is_plain(console: Console) -> bool:
    """Whether this console shows no colour, so structure must be drawn with characters."""
    return console.color_system is None or console.no_color


def visible(text: str) -> str:
    """Token text with its whitespace made visible (␣ space, ↵ newline, ⇥ tab) and control characters removed."""
    text = sanitize(text)
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def quoted(text: str, limit: int = 24) -> str:
    """A token's text as a Python literal (repr escapes every control character and lone surrogate), cut to LIMIT."""
    s = repr(text)
    return s if len(s) <= limit else s[: limit - 2] + "…" + s[-1]


def token_label(tokenizer, i: int, limit: int = 24) -> str:
    """How to show token I alone: its text quoted, or ⟨vocabulary entry⟩ when it is only part of a character."""
    text = tokenizer.decode([i])
    if "\ufffd" in text:
        piece = sanitize(tokenizer.id_to_piece(i))
        return "⟨" + (piece if len(piece) <= limit - 2 else piece[: limit - 3] + "…") + "⟩"
    return quoted(text, limit)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar FRACTION (0..1) of WIDTH cells, in eighths of a cell."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


def percent(p: float) -> str:
    """A probability as a percentage with enough digits to tell small ones apart."""
    if p >= 0.0995:
        return f"{100 * p:5.1f}%"
    if p >= 0.0000995:
        return f"{100 * p:5.2f}%"
    return "<0.01%" if p > 0 else "    0%"


def human_count(n: int) -> str:
    """134,515,008 -> '134.5 M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def human_bytes(n: float) -> str:
    """Bytes in binary units."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
