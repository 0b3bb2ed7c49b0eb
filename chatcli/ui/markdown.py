"""Markdown for model output: HTML shown as text, links shown as text, and a splitter for streaming."""

from __future__ import annotations

from markdown_it import MarkdownIt
from rich.markdown import Markdown

# Rich's own parser enables raw HTML, which Rich then drops: "use the <div> tag" would lose "<div>".
# With html off, markdown-it keeps it as literal text.
_PARSER = MarkdownIt("commonmark", {"html": False}).enable("strikethrough").enable("table")


class SafeMarkdown(Markdown):
    """Rich Markdown that keeps HTML literal and never emits OSC 8 hyperlinks (the URL is printed instead)."""

    def __init__(self, markup: str, code_theme: str = "monokai") -> None:
        super().__init__(markup, code_theme=code_theme, hyperlinks=False)
        self.parsed = _PARSER.parse(markup)


def split_finished(text: str) -> tuple[str, str]:
    """Split TEXT into (finished blocks, open tail): every top-level block but the last one is finished.

    A later line can only extend the last block (or start a new one), so earlier blocks render the same from now on.
    """
    starts = [t.map[0] for t in _PARSER.parse(text) if t.level == 0 and t.nesting >= 0 and t.map]
    if len(starts) < 2:
        return "", text
    # Split on "\n" only, as markdown-it counts lines (str.splitlines also breaks on U+2028 and friends).
    lines = text.split("\n")
    cut = starts[-1]
    return "\n".join(lines[:cut]) + "\n", "\n".join(lines[cut:])
