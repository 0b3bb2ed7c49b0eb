"""The REPL's side of tools: set them up, /tools, asking y/n/a on the terminal, and the loop after each reply."""

from __future__ import annotations

import sys

from chatcli.errors import UsageError
from chatcli.tools.loop import Runner, ask_line, describe, follow


def attach(repl) -> None:
    """Give REPL its tools (repl.tools is None when there are none) and offer the active ones to the model."""
    from chatcli.tools.setup import open_tools

    opts = repl.opts
    repl.tools = open_tools(repl.settings, names=getattr(opts, "tool", None), all_tools=getattr(opts, "all_tools", False),
                            chat=True, warn=repl.ui.note)
    sync(repl)


def sync(repl) -> None:
    """The conversation offers the tools that are on now."""
    repl.conv.tools = repl.tools.schemas() if repl.tools is not None else None


def confirm(repl, call) -> str:
    """y, n or a, typed on the terminal (Enter alone is no)."""
    return ask_line(f"run {describe(call)}? [y]es / [n]o / [a]lways for this tool in this chat: ",
                    lambda: sys.stdin.readline() if not sys.stdin.isatty() else input(),
                    lambda q: (sys.stdout.write(q), sys.stdout.flush()))


def after_reply(repl, answer):
    """Run the reply's tool calls and the replies that follow (the loop of chatcli.tools.loop)."""
    if repl.tools is None:
        return answer
    runner = Runner(repl.tools, repl.ui.note, lambda call: confirm(repl, call), yes=bool(getattr(repl.opts, "yes_tools", False)))
    return follow(repl.conv, answer, runner, repl.reply)


def command(repl, arg: str):
    """/tools lists them; /tools on|off NAME (or all) toggles."""
    if repl.tools is None or not repl.tools.tools:
        repl.ui.note("no tools: configure MCP servers in the config file ([mcp.servers.NAME]) or start with -T NAME")
        return
    word, _, name = arg.partition(" ")
    if not word:
        rows = [[t.name, "on" if t.name in repl.tools.enabled else "off", t.source, t.description.split("\n")[0][:60]]
                for t in repl.tools.tools.values()]
        repl.ui.table(["tool", "state", "from", "description"], rows)
        return
    if word not in ("on", "off") or not name.strip():
        raise UsageError("/tools on NAME or /tools off NAME (NAME may be all); /tools alone lists them")
    repl.tools.toggle(name.strip(), word == "on")
    sync(repl)
    repl.ui.note(f"{name.strip()}: {word}")
    repl._count()


def set_rounds(repl, value: str) -> None:
    """/set tool_rounds N."""
    from chatcli.tools.registry import DEFAULT_ROUNDS

    try:
        n = DEFAULT_ROUNDS if value.lower() == "default" else int(value)
    except ValueError:
        n = -1
    if n < 1 or n > 100:
        raise UsageError(f"tool_rounds must be an integer in [1, 100], got {value!r}")
    if repl.tools is None:
        from chatcli.tools.registry import Registry

        repl.tools = Registry()
    repl.tools.rounds = n
    repl.ui.note(f"tool_rounds = {n}")


def transcript_lines(turn) -> str:
    """What /transcript shows of a turn's tool calls, after its text."""
    return "\n".join(f"tool call {c.id}: {describe(c)}" for c in turn.tool_calls)


# -- ask ----------------------------------------------------------------------------------------------------------

def _stderr(text: str) -> None:
    sys.stderr.write(f"chatcli: {text}\n")
    sys.stderr.flush()


def ask_registry(settings, opts):
    """The tools of an ask (-T NAME, --tools); None without either flag."""
    from chatcli.tools.setup import open_tools

    if not (opts.tool or opts.all_tools):
        return None
    return open_tools(settings, names=opts.tool, all_tools=opts.all_tools, chat=False, warn=_stderr)


def ask_confirm(call) -> str:
    """On a terminal, ask on stderr (stdout carries the answer); otherwise refuse: nobody is there to say yes."""
    if not sys.stdin.isatty():
        _stderr(f"refused {describe(call)}: stdin is not a terminal (--yes-tools runs calls without asking)")
        return "n"
    return ask_line(f"run {describe(call)}? [y]es / [n]o / [a]lways: ", input, lambda q: (sys.stderr.write(q), sys.stderr.flush()))


def ask_follow(reg, opts, conv, answer, reply):
    """ask's tool loop: notes on stderr, the replies after the calls streamed as the first was."""
    if reg is None:
        return answer
    return follow(conv, answer, Runner(reg, _stderr, ask_confirm, yes=opts.yes_tools), reply)
