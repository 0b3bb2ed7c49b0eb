"""`inspect next`: the next-token distribution at T=1 beside the one at the chosen temperature; and /probs."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatcli.inspectui.common import bar, is_plain, percent, quoted, token_label
from chatcli.ui.sanitize import sanitize

LOW = 0.10  # a sampled token below this probability is highlighted as a surprising choice


def _bar_width(console: Console) -> int:
    # rank, token (up to 18), two percentages, the marker and the gaps take about 54 columns; the bars share the rest
    return max(6, min(30, (console.width - 54) // 2))


def render_step(console: Console, step, tokenizer, top: int = 15, title: str | None = None) -> None:
    """One position: top-TOP tokens with bars at T=1 and at T, entropies, the rest's mass, and the sampled token."""
    plain = is_plain(console)
    T = step.temperature
    rows = step.top(top)  # temperature keeps the order, so the same tokens lead at T=1 and at T
    width = _bar_width(console)
    if title:
        console.print(Text(title, style="" if plain else "bold"))
    t = Table(box=None, pad_edge=False, header_style="" if plain else "bold", show_footer=False)
    t.add_column("#", justify="right")
    t.add_column("token")
    t.add_column("T=1", no_wrap=True)
    t.add_column("p", justify="right")
    t.add_column(f"T={T:g}" + (" (greedy)" if T == 0 else ""), no_wrap=True)
    t.add_column("p", justify="right")
    t.add_column("")
    shown = {i for i, _ in rows}
    for rank, (i, p1) in enumerate(rows, 1):
        pt = float(step.probs_t[i])
        mark = "◀ sampled" if i == step.token else ""
        t.add_row(str(rank), Text(token_label(tokenizer, i, 18)), Text(bar(p1, width), style="" if plain else "cyan"),
                  percent(p1), Text(bar(pt, width), style="" if plain else "magenta"), percent(pt),
                  Text(mark, style="" if plain else "bold green"))
    if step.token not in shown:
        i = step.token
        p1, pt = float(step.probs_t1[i]), float(step.probs_t[i])
        t.add_row("…", "", "", "", "", "", "")
        t.add_row(str(step.rank()), Text(token_label(tokenizer, i, 18)), bar(p1, width), percent(p1), bar(pt, width),
                  percent(pt), Text("◀ sampled", style="" if plain else "bold yellow"))
        shown.add(i)
    rest1 = 1.0 - sum(float(step.probs_t1[i]) for i in shown)
    restt = 1.0 - sum(float(step.probs_t[i]) for i in shown)
    n_rest = step.probs_t1.shape[-1] - len(shown)
    dim = "" if plain else "dim"
    t.add_row("", Text(f"{n_rest} others", style=dim), Text(bar(max(rest1, 0.0), width), style=dim), percent(max(rest1, 0.0)),
              Text(bar(max(restt, 0.0), width), style=dim), percent(max(restt, 0.0)), "")
    console.print(t)
    tok = token_label(tokenizer, step.token)
    console.print(Text(f"entropy: {step.entropy_t1:.2f} bits at T=1, {step.entropy_t:.2f} bits at T={T:g}", style=dim))
    console.print(Text(
        f"sampled at T={T:g}: {tok}, rank {step.rank()} of {step.probs_t.shape[-1]}, "
        f"p={percent(float(step.probs_t[step.token])).strip()} (p={percent(float(step.probs_t1[step.token])).strip()} at T=1)",
        style=dim))


@dataclass
class TokenProb:
    """One generated token for /probs: its text, the probability it was drawn with, and likelier or close alternatives."""

    text: str
    prob: float
    alternatives: list[tuple[str, float]]


def _heat(p: float) -> str:
    return "green" if p >= 0.5 else "yellow" if p >= LOW else "bold red"


def render_reply_probs(console: Console, tokens: list[TokenProb], low: float = LOW) -> None:
    """After a reply: its tokens coloured by probability, then each low-probability choice with its alternatives."""
    plain = is_plain(console)
    line = Text()
    for n, tp in enumerate(tokens):
        if plain:
            line.append(("│" if n else "") + sanitize(tp.text) + (f"⁽{100 * tp.prob:.0f}%⁾" if tp.prob < low else ""))
        else:
            line.append(sanitize(tp.text), style=_heat(tp.prob))
    console.print(line)
    surprising = [(n, tp) for n, tp in enumerate(tokens) if tp.prob < low]
    for n, tp in surprising:
        alts = ", ".join(f"{quoted(a, 16)} {percent(p).strip()}" for a, p in tp.alternatives)
        console.print(Text(f"  token {n}: {quoted(tp.text, 16)} {percent(tp.prob).strip()}  (top: {alts})",
                           style="" if plain else "dim"))
    if tokens:
        mean = sum(tp.prob for tp in tokens) / len(tokens)
        console.print(Text(f"  {len(tokens)} tokens · mean p {100 * mean:.0f}% · {len(surprising)} below {100 * low:.0f}%",
                           style="" if plain else "dim"))
