"""Reading the user's next message: prompt-toolkit on a terminal, plain lines otherwise (pipes, --plain)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

PROMPT = ">>> "


class LineReader:
    """One message per line from stdin, for scripted input and --plain. Invalid UTF-8 becomes U+FFFD."""

    def __init__(self, stdin=None, stdout=None, show_prompt: bool | None = None) -> None:
        self.stdin = stdin or sys.stdin
        # Echo a prompt only to a person at a terminal; a script piping lines in wants the replies alone. When the
        # replies go to a file (`chatcli chat > log`), the prompt goes to stderr, which is still the terminal.
        self.show_prompt = self.stdin.isatty() if show_prompt is None else show_prompt
        out = stdout or sys.stdout
        self.stdout = out if out.isatty() or stdout is not None else sys.stderr

    def read(self) -> str:
        """The next line without its newline; EOFError at the end of input."""
        if self.show_prompt:
            self.stdout.write(PROMPT)
            self.stdout.flush()
        raw = self.stdin.buffer.readline() if hasattr(self.stdin, "buffer") else self.stdin.readline()
        if not raw:
            raise EOFError
        line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        return line.rstrip("\r\n")


def _completer(commands: dict[str, str], choices: Callable[[str], Iterable[str]]):
    from prompt_toolkit.completion import Completer, Completion

    class SlashCompleter(Completer):
        """Tab completes /commands, then their first argument (parameter, prompt or model names)."""

        def get_completions(self, document, complete_event):
            text = document.text_before_cursor
            if not text.startswith("/") or "\n" in text:
                return
            head, sep, rest = text.partition(" ")
            if not sep:
                for name, help_ in commands.items():
                    if name.startswith(head):
                        yield Completion(name, start_position=-len(head), display_meta=help_)
                return
            if " " in rest:
                return
            for option in choices(head):
                if option.startswith(rest):
                    yield Completion(option, start_position=-len(rest))

    return SlashCompleter()


class TerminalReader:
    """prompt-toolkit input: persistent history, Ctrl-R, emacs or vi keys, Alt-Enter newline, bracketed paste,
    Ctrl-X Ctrl-E for $EDITOR, Tab completion of slash commands, and an always-visible bottom toolbar."""

    def __init__(self, history_file: Path, toolbar: Callable[[], list[tuple[str, str]]], commands: dict[str, str],
                 choices: Callable[[str], Iterable[str]], vi: bool = False) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings
        from prompt_toolkit.styles import Style

        try:
            history_file.parent.mkdir(parents=True, exist_ok=True)
            history_file.touch(exist_ok=True)
            history = FileHistory(str(history_file))
        except OSError:
            history = InMemoryHistory()  # a read-only data dir must not stop the chat

        keys = KeyBindings()

        @keys.add("escape", "enter")
        def _newline(event) -> None:
            # Alt-Enter (terminals send Esc then Enter) adds a line; Enter alone sends.
            event.current_buffer.insert_text("\n")

        @keys.add("c-c")
        def _clear(event) -> None:
            # Ctrl-C at the prompt clears the line instead of quitting.
            event.current_buffer.reset()

        self.session = PromptSession(
            history=history,
            vi_mode=vi,
            multiline=False,
            enable_open_in_editor=True,
            completer=_completer(commands, choices),
            complete_while_typing=False,
            auto_suggest=AutoSuggestFromHistory(),
            bottom_toolbar=toolbar,
            key_bindings=keys,
            prompt_continuation=lambda width, line_number, wrap_count: "." * (width - 1) + " ",
            style=Style.from_dict({"bottom-toolbar": "noreverse bg:#303030 #d0d0d0", "prompt": "bold"}),
            tempfile_suffix=".md",
            mouse_support=False,
        )

    def read(self) -> str:
        """The next message; EOFError on Ctrl-D at an empty line."""
        return self.session.prompt([("class:prompt", PROMPT)])


@contextlib.contextmanager
def no_echo(stream=None) -> Iterator[None]:
    """While a reply streams, keys typed ahead are not echoed into it (they stay queued for the next prompt, which
    shows them). Ctrl-C still signals; ^C is not printed over the reply."""
    stream = stream or sys.stdin
    try:
        import termios

        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, AttributeError):  # not a terminal, or not POSIX
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)  # lflags
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)  # TCSANOW: keep what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
