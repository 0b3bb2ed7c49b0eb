"""`inspect tokens` and the REPL's /tokens: where the tokenizer cuts the text."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatcli.inspectui.common import is_plain, quoted
from chatcli.ui.sanitize import sanitize

STYLES = ("black on bright_cyan", "black on bright_yellow")  # alternate so neighbouring tokens are told apart


def tokens_line(spans, plain: bool) -> Text:
    """The text with token boundaries: alternating backgrounds, or '│' between tokens when there is no colour."""
    line = Text()
    shown = [s for s in spans if s.text]  # a token holding only part of a character shows with the token completing it
    for n, span in enumerate(shown):
        # Spaces stay spaces (the background or the bars show them); a newline is marked and kept.
        piece = sanitize(span.text).replace("\t", "⇥").replace("\n", "↵\n")
        if plain:
            line.append(("│" if n else "") + piece)
        else:
            line.append(piece, style=STYLES[n % 2])
    return line


def render_tokens(console: Console, tokenizer, text: str, ids: list[int] | None = None, table: bool = True) -> None:
    """Show TEXT cut into tokens, then (with TABLE) each token's id, text and vocabulary entry, and the counts."""
    from chatcli.engine.introspect import token_spans

    spans = token_spans(tokenizer, text, ids)
    plain = is_plain(console)
    console.print(tokens_line(spans, plain))
    if table and spans:
        t = Table("#", "id", "text", "vocabulary entry", box=None, pad_edge=False, header_style="" if plain else "bold")
        for n, span in enumerate(spans):
            style = "" if plain else STYLES[n % 2].split(" on ")[1]
            t.add_row(str(n), str(span.id), Text(quoted(span.text, 30) if span.text else "(part of a character)", style=style),
                      Text(quoted(span.piece, 30)))
        console.print(t)
    chars = len(text)
    ratio = f"{chars / len(spans):.2f}" if spans else "-"
    console.print(Text(f"{len(spans)} tokens · {chars} characters · {ratio} characters per token", style="" if plain else "dim"))
