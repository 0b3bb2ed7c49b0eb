"""Show a reply as it streams: Markdown with only the open block live, or plain text with no ANSI at all."""

from __future__ import annotations

import threading
import time
from typing import IO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.segment import Segment
from rich.spinner import Spinner
from rich.text import Text

from chatcli.ui.markdown import SafeMarkdown, split_finished
from chatcli.ui.sanitize import sanitize


class Thought:
    """A reply's reasoning as it streams: its text, pieces (about one a token) and how long it took."""

    def __init__(self) -> None:
        self.text, self.tokens, self.start, self.seconds = "", 0, 0.0, 0.0
        self.summarised = False

    def add(self, text: str) -> None:
        if not self.tokens:
            self.start = time.monotonic()
        self.text += text
        self.tokens += 1
        self.seconds = time.monotonic() - self.start

    def summary(self) -> str | None:
        """The one line the reasoning collapses into once the answer starts (once; None without reasoning)."""
        if not self.tokens or self.summarised:
            return None
        self.summarised = True
        return f"thought for {self.tokens} tokens, {self.seconds:.1f} s; /think shows it"


class _Lines:
    """Already-rendered lines, printed as they are."""

    def __init__(self, lines: list[list[Segment]]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines:
            yield from line
            yield Segment.line()


class MarkdownStream:
    """Finished Markdown blocks are printed once, above a short transient Live area that holds the open block.

    Only the open block is redrawn, and the Live area is kept shorter than the screen (its top is folded while it
    grows), so nothing flickers, nothing is cropped in the scrollback, and long answers scroll normally.

    Redraws happen on the caller's thread as text arrives (at most REFRESH_PER_SECOND times a second). Rich's
    auto-refresh thread would race with the blocks printed from this thread, and a redraw that moves the cursor by a
    stale height erases lines above it. The only other thread animates the spinner before the first token and is
    stopped (settle()) before anything else is printed.
    """

    def __init__(self, console: Console, *, code_theme: str = "monokai", refresh_per_second: float = 12) -> None:
        self.console = console
        self.code_theme = code_theme
        self.text = ""  # everything shown so far (sanitised), for the caller's record
        self._tail = ""  # the open block(s), not yet printed for good
        self._prev = ""  # the last block printed, rendered again as context so spacing matches a one-shot render
        self._spinner = Spinner("dots", style="dim")  # shown until the first token (prompt processing)
        self._interval = 1.0 / refresh_per_second
        self._last_refresh = 0.0
        self._settled = threading.Event()
        self.thought = Thought()  # before the Live below, which draws _live_view at once
        self._spin_thread = threading.Thread(target=self._spin, daemon=True)
        self._live = Live(
            console=console,
            get_renderable=self._live_view,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="visible",
        )
        self._open = False

    def feed_reasoning(self, text: str) -> None:
        """Reasoning streams dimmed under a "thinking" header in the live area, which the answer then replaces."""
        text = sanitize(text)
        if not text:
            return
        self.settle()
        self.thought.add(text)
        now = time.monotonic()
        if now - self._last_refresh >= self._interval:
            self._live.refresh()
            self._last_refresh = now

    def _summarise(self) -> None:
        line = self.thought.summary()
        if line is not None:
            self.console.print(Text(line, style="dim"))

    def __enter__(self) -> MarkdownStream:
        self._live.start(refresh=True)
        self._open = True
        self._spin_thread.start()
        return self

    def _spin(self) -> None:
        while not self._settled.wait(0.1):
            self._live.refresh()

    def settle(self) -> None:
        """Stop the spinner thread; from now on only the caller's thread draws."""
        if not self._settled.is_set():
            self._settled.set()
            if self._spin_thread.is_alive():
                self._spin_thread.join()

    def __exit__(self, *exc) -> None:
        self.close()

    def feed(self, text: str) -> None:
        """Add streamed text; print any block that the new text finished."""
        text = sanitize(text)
        if not text:
            return
        self.settle()
        if self.thought.tokens and not self.thought.summarised:
            with self.console:
                self._summarise()
        self.text += text
        finished, self._tail = split_finished(self._tail + text)
        now = time.monotonic()
        if finished:
            # One buffered write: the block above and the redrawn live area land together (no flash of either).
            with self.console:
                self._print_block(finished)
                self._live.refresh()
            self._last_refresh = now
        elif now - self._last_refresh >= self._interval:
            self._live.refresh()
            self._last_refresh = now

    def close(self) -> None:
        """Stop the live area and print what is left, exactly once."""
        if not self._open:
            return
        self._open = False
        self.settle()
        with self.console:  # one write: erase the live copy of the open block and print it for good
            self._live.stop()
            self._summarise()  # a reply that only thought (cut at max_tokens)
            if self._tail.strip():
                self._print_block(self._tail)
        self._tail = ""

    def _render(self, markup: str) -> list[list[Segment]]:
        options = self.console.options
        return self.console.render_lines(SafeMarkdown(markup, code_theme=self.code_theme), options, pad=False)

    def _after_prev(self, markup: str) -> list[list[Segment]]:
        # Rich decides the blank line between blocks from the block before, so render the previous block with this
        # one and keep only the new lines: the streamed output then equals rendering the whole reply at once.
        if not self._prev:
            return self._render(markup)
        skip = len(self._render(self._prev))
        return self._render(self._prev + markup)[skip:]

    def _print_block(self, markup: str) -> None:
        lines = self._after_prev(markup)
        self._prev = markup
        self.console.print(_Lines(lines))

    def _live_view(self):
        tail = self._tail
        if not tail.strip() and self.thought.tokens and not self.text:
            room = max(3, self.console.size.height - 3)
            lines = self.thought.text.splitlines()[-room:]
            return Text("thinking\n" + "\n".join(lines), style="dim")
        if not tail.strip():
            return self._spinner if not self.text else Text("")
        lines = self._render(tail)
        if self._prev:
            lines = [[]] + lines
        room = max(3, self.console.size.height - 2)
        if len(lines) > room:
            # Fold the top of a block taller than the screen: redrawing lines that scrolled away would duplicate
            # them. The whole block is printed when it ends.
            hidden = len(lines) - room + 1
            note = Text(f"… {hidden} lines above, printed in full when this block ends", style="dim")
            lines = [list(note.render(self.console))] + lines[-(room - 1):]
        return _Lines(lines)


class PlainStream:
    """Sanitised text written as it comes, flushed each time, no ANSI; for pipes, --plain and NO_COLOR."""

    def __init__(self, file: IO[str], json: bool = False) -> None:
        self.file, self.json = file, json  # json: the answer is JSON (see sanitize)
        self.text = ""
        self._open = False
        self.thought = Thought()

    def feed_reasoning(self, text: str) -> None:
        """Plain output keeps only the answer; the reasoning becomes one summary line before it."""
        text = sanitize(text)
        if text:
            self.thought.add(text)

    def _summarise(self) -> None:
        line = self.thought.summary()
        if line is not None:
            self.file.write(f"[{line}]\n")

    def __enter__(self) -> PlainStream:
        self._open = True
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def settle(self) -> None:
        """Nothing animates in plain mode."""

    def feed(self, text: str) -> None:
        """Write sanitised text and flush, so `| head -c N` sees it (and breaks the pipe) at once."""
        text = sanitize(text, self.json)
        if text:
            self._summarise()
            self.text += text
            self.file.write(text)
            self.file.flush()

    def close(self) -> None:
        """End the reply on a new line."""
        if not self._open:
            return
        self._open = False
        self._summarise()
        if self.text and not self.text.endswith("\n"):
            self.file.write("\n")
        self.file.flush()
