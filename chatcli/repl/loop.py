"""The chat loop: read a message or a /command, stream the reply, keep going until Ctrl-D or /exit."""

from __future__ import annotations

import contextlib
import shutil
import sys
from dataclasses import dataclass, field

from chatcli.errors import USER_ERRORS
from chatcli.repl.ask import Answer, consume
from chatcli.repl.boot import Options, chosen_model, compile_in_background, load_settings, model_label, open_backend
from chatcli.repl.conversation import open_conversation, take_notices
from chatcli.repl.input import TerminalReader, no_echo
from chatcli.ui import UI


@dataclass
class SessionStats:
    """Totals for /stats."""

    replies: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: list[float] = field(default_factory=list)
    decode_s: float = 0.0
    total_s: float = 0.0
    interrupted: int = 0
    estimated: bool = False

    def add(self, answer: Answer) -> None:
        """Count one reply."""
        s = answer.stats
        self.replies += 1
        self.interrupted += answer.finish_reason == "interrupted"
        if s is None:
            return
        self.prompt_tokens += s.prompt_tokens
        self.cached_tokens += s.cached_tokens
        self.completion_tokens += s.completion_tokens
        self.ttft_s.append(s.ttft_s)
        if s.decode_tps > 0:
            self.decode_s += max(s.completion_tokens - 1, 0) / s.decode_tps
        self.total_s += s.total_s
        self.estimated = self.estimated or s.estimated


class Repl:
    """One chat session on a terminal (or on piped lines, in plain mode)."""

    def __init__(self, conv, backend, ui: UI, settings, opts: Options, reader=None) -> None:
        self.conv = conv
        self.backend = backend
        self.ui = ui
        self.settings = settings
        self.opts = opts
        self.model = model_label(settings)
        self.stats = SessionStats()
        self.tokens_used = self.context_length = 0  # cached for the toolbar, which is redrawn on every key
        self.reader = reader or self._make_reader()
        self.tools = None  # chatcli.tools.registry.Registry when the chat has tools (chatcli.repl.tools.attach)

    # -- input ----------------------------------------------------------------------------------------
    def _make_reader(self):
        from chatcli import settings as paths
        from chatcli.repl import slash
        from chatcli.repl.input import LineReader

        if self.ui.plain or not sys.stdin.isatty():
            return LineReader()
        return TerminalReader(paths.data_dir() / "input_history", self.toolbar, slash.HELP,
                              lambda name: slash.choices(self, name), vi=bool(self.settings.get("vi")))

    def toolbar(self) -> list[tuple[str, str]]:
        """model · backend · prompt · sampling · tokens used of the context."""
        p = self.conv.params
        ctx = self.context_length
        seed = "-" if p.seed is None else str(p.seed)
        approx = "~" if getattr(self.backend, "tokens_estimated", False) else ""  # a server that cannot tokenize
        used = f"{approx}{self.tokens_used}/{ctx}" if ctx else f"{approx}{self.tokens_used}"
        text = (f" {self.model} · {getattr(self.backend, 'name', '?')} · prompt {self.conv.prompt.name} · "
                f"temp {p.temperature:g} · top_p {p.top_p:g} · seed {seed} · {used} tokens ")
        width = shutil.get_terminal_size().columns
        if len(text) > width:  # one line always; a wrapped toolbar pushes the prompt up
            text = text[: width - 1] + "…"
        return [("class:bottom-toolbar", text)]

    def _count(self) -> None:
        """Refresh the toolbar's token count (after a turn or a change, not on every key)."""
        try:
            self.tokens_used, self.context_length = self.conv.token_usage()
        except USER_ERRORS:
            pass

    # -- the loop -------------------------------------------------------------------------------------
    def run(self) -> int:
        """Chat until Ctrl-D or /exit; return the exit code."""
        from chatcli.repl import slash

        self.banner()
        self.notices()  # a read-only store, a resumed conversation's changes
        self._count()
        while True:
            try:
                line = self.reader.read()
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt: a fresh line
            except EOFError:
                break
            text = line.strip()
            if not text:
                continue
            try:
                if text.startswith("/") and not text.startswith("//"):
                    if slash.dispatch(self, text) is slash.EXIT:
                        break
                    continue
                # "//text" sends "/text": the way to start a message with a slash.
                self.follow(self.reply(self.conv.send(line.lstrip()[1:] if text.startswith("//") else line)))
            except USER_ERRORS as e:
                self.ui.error(str(e))
            except KeyboardInterrupt:  # Ctrl-C in a slow command (/model loading a model)
                self.ui.note("[interrupted]")
        self.finish()
        return 0

    def banner(self) -> None:
        """Say what is running and how to get help."""
        if self.ui.plain and not sys.stdin.isatty():
            return  # a script piping lines in wants the replies alone
        self.ui.note(f"chatcli · {self.model} on {getattr(self.backend, 'name', '?')} · prompt "
                     f"{self.conv.prompt.name} · /help · Ctrl-C stops a reply · Ctrl-D quits")

    def reply(self, chunks) -> Answer:
        """Stream one reply, then its notes and the stats line."""
        quiet = no_echo() if isinstance(self.reader, TerminalReader) else contextlib.nullcontext()
        view = self.ui.reply()
        hide = bool(getattr(self.opts, "hide_thinking", False))
        with quiet:
            answer = consume(chunks, view, self.conv.cancel, before=self.notices,
                             on_reasoning=None if hide else getattr(view, "feed_reasoning", None))
        self.notices()
        self.stats.add(answer)
        if answer.finish_reason == "interrupted":
            self.ui.note("[interrupted: the partial reply is kept; /retry to regenerate]")
        elif answer.finish_reason == "length":
            cut = " before the JSON was complete" if getattr(self.conv, "response_format", None) else ""
            self.ui.note(f"[stopped at max_tokens={self.conv.params.max_tokens} or the end of the context{cut}]")
        if answer.error is not None:
            self.ui.error(str(answer.error))
        if answer.probs and getattr(self.backend, "want_probs", False):
            from chatcli.inspectui.repl_hooks import show_reply_probs

            show_reply_probs(self.ui.console, answer.probs)
        self.ui.stats(answer.stats)
        self._count()
        return answer

    def follow(self, answer: Answer) -> Answer:
        """Run the reply's tool calls, asking first, and stream the replies after them."""
        from chatcli.repl import tools

        return tools.after_reply(self, answer)

    def finish(self) -> None:
        """Ctrl-D and /exit: the store already holds every turn; say where, and let go of the model."""
        saved = self.conv.conv_id if self.conv.save_enabled else None
        if saved is not None and not (self.ui.plain and not sys.stdin.isatty()):
            self.ui.note(f"saved as conversation {saved} (chatcli chat --resume {saved})")
        if self.conv.history is not None:
            self.conv.history.close()
        self.backend.close()
        if self.tools is not None:
            self.tools.close()

    def notices(self) -> None:
        """Show what the conversation wants the user to know (context trimmed, store warnings)."""
        for notice in take_notices(self.conv):
            self.ui.note(notice)


def run_chat(opts: Options) -> int:
    """`chatcli chat`: settings, backend, conversation, then the loop."""
    s = load_settings(opts)
    ui = UI(plain=opts.plain)
    if s.get("backend") == "local":  # a first-time pull draws its own progress bars: not under the spinner
        from chatcli.store.resolve import resolve_model

        resolve_model(chosen_model(s))
    with ui.status(f"loading {model_label(s)} …"):
        backend = open_backend(s, opts)
    if hasattr(backend, "on_notice"):  # from now on the backend's notices are chat notes, like the session's
        backend.on_notice = lambda notice: ui.note(notice.text)
    compile_in_background(backend)
    conv = open_conversation(s, opts, backend, ui)
    repl = Repl(conv, backend, ui, s, opts)
    from chatcli.repl import tools

    tools.attach(repl)
    return repl.run()
