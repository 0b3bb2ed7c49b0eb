"""Rendering tests: streamed Markdown equals a one-shot render, nothing is cut, and no escape sequence gets through."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from chatcli.types import Stats
from chatcli.ui import UI, MarkdownStream, PlainStream, SafeMarkdown, format_stats, sanitize, split_finished

REPLY = """# Sorting

Here is a *quick* comparison of two algorithms, long enough that the paragraph wraps across lines.

| algorithm | best | worst |
|-----------|------|-------|
| quicksort | n log n | n^2 |
| mergesort | n log n | n log n |

- stable: mergesort
- in place: quicksort

  (mostly)

1. pick a pivot
2. partition

```python
def quicksort(xs):
    if len(xs) < 2:
        return xs
    pivot, *rest = xs
    return quicksort([x for x in rest if x < pivot]) + [pivot] + quicksort([x for x in rest if x >= pivot])
```

---

That's all.
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def tokens(text: str, size: int = 3):
    """Feed text in small pieces, the way a model streams it."""
    return [text[i:i + size] for i in range(0, len(text), size)]


def terminal(width: int = 72, height: int = 24, color: bool = True) -> Console:
    return Console(file=io.StringIO(), width=width, height=height, force_terminal=True,
                   color_system="truecolor" if color else None, markup=False, highlight=False)


def stream(text: str, console: Console, size: int = 3) -> str:
    with MarkdownStream(console, refresh_per_second=50) as view:
        for piece in tokens(text, size):
            view.feed(piece)
    return console.file.getvalue()


def test_split_finished_keeps_open_block():
    assert split_finished("para one\n\nPar") == ("para one\n\n", "Par")
    assert split_finished("```py\nx = 1\n\ny = 2\n") == ("", "```py\nx = 1\n\ny = 2\n")
    assert split_finished("- a\n- b\n\nnext") == ("- a\n- b\n\n", "next")
    assert split_finished("only") == ("", "only")


def test_streamed_blocks_equal_one_shot_render():
    """Finished blocks printed one by one give exactly the lines of rendering the whole reply at once."""
    whole = Console(file=io.StringIO(), width=60, color_system=None, force_terminal=False)
    whole.print(SafeMarkdown(REPLY))
    for size in (1, 4, 17):
        parts = Console(file=io.StringIO(), width=60, color_system=None, force_terminal=False)
        stream(REPLY, parts, size)  # Live on a non-terminal console draws nothing, so only the printed blocks remain
        assert parts.file.getvalue() == whole.file.getvalue(), f"chunk size {size}"


def test_table_and_code_render_on_a_terminal():
    out = stream(REPLY, terminal())
    final = ANSI.sub("", out)
    assert re.search(r"algorithm\s+.*best\s+.*worst", final)
    assert "mergesort" in final
    assert "```" not in final  # fences became a code block
    assert "def quicksort(xs):" in final
    assert "\x1b[38;2;" in out  # syntax highlighting colours


def test_escape_sequences_and_markup_show_as_text():
    evil = ("Title \x1b]0;pwned\x07 then clear \x1b[2J and [red]x[/red] and [bold]b[/bold]\n\n"
            "link \x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\ clip \x1b]52;c;ZXZpbA==\x07 "
            "dcs \x1bP1$qm\x1b\\ c1 \x9b31m red \x9d0;t\x9c\n")
    out = stream(evil, terminal(), size=2)
    assert "\x1b]0;" not in out and "\x1b]8;" not in out and "\x1b]52" not in out and "\x1bP" not in out
    assert "\x1b[2J" not in out and "\x9b" not in out and "\x9d" not in out and "\x07" not in out
    final = ANSI.sub("", out)
    assert "[red]x[/red]" in final and "[bold]b[/bold]" in final
    assert "pwned" in final  # the payload text is shown, only its control characters are removed
    plain = io.StringIO()
    with PlainStream(plain) as view:
        for piece in tokens(evil, 1):
            view.feed(piece)
    assert "\x1b" not in plain.getvalue() and "\x07" not in plain.getvalue()
    assert "[red]x[/red]" in plain.getvalue()


def test_sanitize_keeps_newline_tab_and_text():
    assert sanitize("a\tb\nc\r\x00\x7f\x85é€\ud800") == "a\tb\nc" + "é€\ufffd"


def test_html_and_links_are_literal():
    out = Console(file=io.StringIO(), width=80, color_system=None)
    out.print(SafeMarkdown("Use the <div> tag.\n\n<script>alert(1)</script>\n\n[site](http://x.example)"))
    text = out.file.getvalue()
    assert "<div>" in text and "<script>alert(1)</script>" in text and "http://x.example" in text


def test_long_reply_is_not_cut():
    lines = [f"line {i:03d} of a long answer" for i in range(200)]
    reply = "\n\n".join(lines[:100]) + "\n\n```text\n" + "\n".join(lines[100:]) + "\n```\n"
    out = ANSI.sub("", stream(reply, terminal(height=20)))
    for line in lines:
        assert line in out
    assert "..." not in out and "…" not in out.split("line 199")[-1]


def test_plain_ui_has_no_ansi(monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    ui = UI(plain=False, file=out, err=err)  # StringIO is not a terminal: plain
    assert ui.plain
    with ui.reply() as view:
        for piece in tokens(REPLY):
            view.feed(piece)
    ui.stats(Stats(prompt_tokens=10, completion_tokens=5, ttft_s=0.1, decode_tps=20.0))
    ui.error("bad\nthing")
    ui.table(["a", "b"], [[1, "\x1b[31mx"]])
    assert "\x1b" not in out.getvalue() + err.getvalue()
    assert out.getvalue().startswith(REPLY)
    assert err.getvalue() == "error: bad thing\n"


def test_no_color_env_forces_plain(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert not UI(file=Tty()).plain
    monkeypatch.setenv("NO_COLOR", "1")
    assert UI(file=Tty()).plain


def test_format_stats():
    line = format_stats(Stats(prompt_tokens=120, cached_tokens=100, completion_tokens=42, ttft_s=0.183, decode_tps=31.25))
    assert line == "42 tokens · TTFT 0.18 s · 31.2 tok/s · prompt 120, 100 cached"


@pytest.mark.parametrize("width", [20, 100])
def test_live_area_stays_on_screen(width):
    """While a tall block streams, each redraw stays shorter than the screen (no scrolled-away redraws)."""
    console = terminal(width=width, height=10)
    reply = "```text\n" + "\n".join(f"row {i}" for i in range(60)) + "\n```\n"
    view = MarkdownStream(console, refresh_per_second=50)
    with view:
        for piece in tokens(reply, 5):
            view.feed(piece)
            rendered = console.render_lines(view._live_view(), console.options, pad=False)
            assert len(rendered) <= 10
    assert "row 59" in console.file.getvalue()


class Screen:
    """Just enough of a terminal to replay Rich's Live output: CR, LF, cursor up, erase line; SGR ignored."""

    CONTROL = re.compile(r"\x1b\[(\d*)([A-Za-z])|\x1b\[\?\d+[hl]|\r|\n|[^\x1b\r\n]")

    def __init__(self, width: int) -> None:
        self.width, self.rows, self.row, self.col = width, [[]], 0, 0

    def feed(self, data: str) -> Screen:
        for m in self.CONTROL.finditer(data):
            token = m.group(0)
            if token == "\r":
                self.col = 0
            elif token == "\n":
                self.row, self.col = self.row + 1, 0
            elif m.group(2) == "A":
                self.row = max(0, self.row - int(m.group(1) or 1))
            elif m.group(2) == "K":
                self._line().clear()
            elif m.group(2) == "m" or token.startswith("\x1b[?"):
                pass
            elif len(token) == 1:
                if self.col >= self.width:
                    self.row, self.col = self.row + 1, 0
                line = self._line()
                line.extend(" " * (self.col - len(line) + 1) if len(line) <= self.col else "")
                line[self.col] = token
                self.col += 1
            else:
                raise AssertionError(f"unexpected control {token!r}")
        return self

    def _line(self) -> list:
        while len(self.rows) <= self.row:
            self.rows.append([])
        return self.rows[self.row]

    def text(self) -> str:
        return "\n".join("".join(r).rstrip() for r in self.rows).rstrip("\n")


def test_terminal_screen_after_streaming_equals_one_shot():
    """Replaying the live redraws on a screen leaves exactly what printing the whole reply at once would."""
    long = REPLY + "\n\n" + "\n".join(f"{i}. item {i}" for i in range(1, 40)) + "\n\nDone.\n"
    streamed = Screen(72).feed(stream(long, terminal(color=False, height=20), size=5)).text()
    once = terminal(color=False, height=20)
    once.print(SafeMarkdown(long))
    assert streamed == Screen(72).feed(once.file.getvalue()).text()
    assert "item 39" in streamed and "def quicksort(xs):" in streamed
