"""`inspect neighbours` and `inspect analogy`: nearest tokens in the input embedding space."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatcli.inspectui.common import bar, is_plain, token_label


def describe_word(tokenizer, wv) -> str:
    """"'tower' is token ' tower' (id 20056)" or the pieces that were averaged."""
    pieces = " + ".join(f"{token_label(tokenizer, i)} ({i})" for i in wv.ids)
    if wv.averaged:
        return f"{wv.word!r} is {len(wv.ids)} tokens, averaged (--mean): {pieces}"
    return f"{wv.word!r} is token {pieces}"


def render_similar(console: Console, tokenizer, rows: list[tuple[int, float]], header: list[str]) -> None:
    """Header lines, then a table of (token, cosine similarity) with bars."""
    plain = is_plain(console)
    for line in header:
        console.print(Text(line, style="" if plain else "dim"))
    t = Table("#", "token", "id", "cosine", "", box=None, pad_edge=False, header_style="" if plain else "bold")
    width = max(8, min(30, console.width - 50))
    for rank, (i, sim) in enumerate(rows, 1):
        t.add_row(str(rank), Text(token_label(tokenizer, i, 28)), str(i), f"{sim:+.3f}",
                  Text(bar(max(sim, 0.0), width), style="" if plain else "cyan"))
    console.print(t)


def render_neighbours(console: Console, tokenizer, wv, rows, vocab: int) -> None:
    """Nearest tokens to one word."""
    render_similar(console, tokenizer, rows, [
        describe_word(tokenizer, wv),
        f"nearest of {vocab} tokens by cosine similarity in the input embedding (model.embed_tokens.weight):",
    ])


def render_analogy(console: Console, tokenizer, terms, rows, vocab: int) -> None:
    """The analogy's terms and the tokens nearest to their signed sum."""
    expr = " ".join(("−" if sign < 0 else "+" if n else "") + (" " if sign < 0 or n else "") + wv.word
                    for n, (sign, wv) in enumerate(terms))
    lines = [describe_word(tokenizer, wv) for _, wv in terms]
    lines.append(f"{expr} ≈ ? nearest of {vocab} tokens to the sum of unit-length embeddings, inputs excluded:")
    render_similar(console, tokenizer, rows, lines)
