"""The one place that decides rich vs plain output, and the small lines around replies (notes, errors, stats)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatcli.ui.markdown import SafeMarkdown
from chatcli.ui.sanitize import sanitize
from chatcli.ui.stream import MarkdownStream, PlainStream


def plain_wanted(plain: bool = False, file: IO[str] | None = None) -> bool:
    """Plain text when asked (--plain), when NO_COLOR is set, for TERM=dumb, or when the output is not a terminal."""
    file = file or sys.stdout
    if plain or os.environ.get("NO_COLOR", "") != "" or os.environ.get("TERM") == "dumb":
        return True
    try:
        return not file.isatty()
    except (AttributeError, ValueError):
        return True


def format_stats(stats, *, dim_prompt: bool = True) -> str:
    """One line: tokens, time to first token, decode speed, and the prompt's (cached) tokens."""
    approx = "~" if getattr(stats, "estimated", False) else ""
    parts = [
        f"{approx}{stats.completion_tokens} tokens",
        f"TTFT {stats.ttft_s:.2f} s",
        f"{stats.decode_tps:.1f} tok/s",
    ]
    if dim_prompt and stats.prompt_tokens:
        cached = f", {stats.cached_tokens} cached" if stats.cached_tokens else ""
        parts.append(f"prompt {approx}{stats.prompt_tokens}{cached}")
    return " · ".join(parts)


class UI:
    """Terminal output for chat and ask. In plain mode nothing goes through Rich, so no ANSI can appear."""

    def __init__(self, plain: bool = False, file: IO[str] | None = None, err: IO[str] | None = None,
                 width: int | None = None) -> None:
        self.file = file or sys.stdout
        self.err = err or sys.stderr
        self.plain = plain_wanted(plain, self.file)
        # markup/emoji/highlight off: no text we print (least of all model text) is ever parsed as Rich markup.
        self.console = Console(file=self.file, markup=False, emoji=False, highlight=False, width=width,
                               force_terminal=None if not self.plain else False)
        self.err_console = Console(file=self.err, markup=False, emoji=False, highlight=False,
                                   force_terminal=None if not self.plain else False,
                                   no_color=self.plain)

    def reply(self, json: bool = False):
        """A context manager that shows one streamed reply (JSON: a structured answer, printed as it is when plain)."""
        return PlainStream(self.file, json) if self.plain else MarkdownStream(self.console)

    def status(self, text: str):
        """A transient spinner while something slow happens (loading a model); nothing in plain mode."""
        if self.plain:
            return contextlib.nullcontext()
        return self.console.status(Text(text, style="dim"), spinner="dots")

    def line(self, text: str = "", style: str | None = None) -> None:
        """Print one line of our own text (never parsed as markup)."""
        if self.plain:
            self.file.write(text + "\n")
            self.file.flush()
        else:
            self.console.print(Text(text, style=style or ""))

    def note(self, text: str) -> None:
        """A dim line: stats, notices, confirmations."""
        self.line(text, style="dim")

    def error(self, text: str) -> None:
        """One line on stderr; the chat goes on."""
        text = " ".join(sanitize(str(text)).split())
        if self.plain:
            self.err.write(f"error: {text}\n")
            self.err.flush()
        else:
            self.err_console.print(Text(f"error: {text}", style="red"))

    def stats(self, stats) -> None:
        """The dim stats line after a reply."""
        if stats is not None:
            self.note(format_stats(stats))

    def message(self, role: str, content: str, note: str = "") -> None:
        """One message of a transcript: role header, then the content (sanitised, Markdown when rich)."""
        header = f"{role}{' (' + note + ')' if note else ''}:"
        if self.plain:
            self.file.write(f"{header}\n{sanitize(content)}\n\n")
            self.file.flush()
            return
        style = {"user": "bold cyan", "assistant": "bold green", "system": "bold magenta"}.get(role, "bold")
        self.console.print(Text(header, style=style))
        self.console.print(SafeMarkdown(sanitize(content)))
        self.console.print()

    def table(self, columns: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
        """A small table (plain: tab-separated)."""
        columns = list(columns)
        rows = [[sanitize("" if v is None else str(v)) for v in row] for row in rows]
        if self.plain:
            self.file.write("\t".join(columns) + "\n")
            for row in rows:
                self.file.write("\t".join(row) + "\n")
            self.file.flush()
            return
        table = Table(*columns, box=None, header_style="bold", pad_edge=False)
        for row in rows:
            table.add_row(*[Text(v) for v in row])
        self.console.print(table)
