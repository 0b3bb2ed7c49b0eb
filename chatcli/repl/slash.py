"""Slash commands. Each takes the Repl and the rest of the line; a bad one is one error line and the chat goes on."""

from __future__ import annotations

import base64
import difflib
import shlex
import sys
from typing import Callable

from chatcli.errors import UsageError

EXIT = object()  # returned by /exit
PARAMS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens", "stop")
_INT = ("top_k", "max_tokens", "seed")

HELP: dict[str, str] = {
    "/help": "this list",
    "/set": "/set NAME VALUE (temperature, top_p, top_k, min_p, repeat_penalty, seed, max_tokens, stop); /set alone shows them",
    "/system": "/system TEXT replaces the system prompt; /system alone shows it",
    "/prompt": "/prompt NAME switches prompt files (keeps the conversation); /prompt reload re-reads them",
    "/prompts": "list the prompt files",
    "/reset": "start a new conversation (same prompt and settings)",
    "/undo": "drop the last exchange",
    "/retry": "regenerate the last reply",
    "/transcript": "show the conversation so far",
    "/save": "/save [TITLE] names the conversation in the history",
    "/history": "list saved conversations",
    "/load": "/load ID continues a saved conversation",
    "/stats": "token counts and speeds for this session",
    "/model": "/model NAME switches models (keeps the conversation)",
    "/copy": "copy the last reply to the clipboard (OSC 52 terminal escape, only when you ask)",
    "/exit": "save and quit (Ctrl-D does the same)",
}
ALIASES = {"/quit": "/exit", "/q": "/exit", "/?": "/help", "/clear": "/reset"}


def dispatch(repl, line: str):
    """Run one /command line; UsageError for unknown commands (with the closest name) and bad values."""
    name, _, arg = line.strip().partition(" ")
    name = ALIASES.get(name.lower(), name.lower())
    handler = COMMANDS.get(name)
    if handler is None:
        close = difflib.get_close_matches(name, list(HELP), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown command {name}{hint} (/help lists them; start with // to send a message that begins with /)")
    return handler(repl, arg.strip())


def choices(repl, name: str) -> list[str]:
    """Tab completions for the first argument of NAME."""
    if name == "/set":
        return list(PARAMS)
    if name == "/prompt":
        from chatcli.prompts import list_prompts

        return ["reload", *(p.name for p in list_prompts(errors=[]))]
    if name == "/model":
        try:
            return list(repl.backend.models())
        except Exception:  # completion must never break the prompt (a server may be down)
            return []
    return []


def parse_value(name: str, value: str):
    """A /set value typed as the parameter needs it; 'none' clears the seed and stop."""
    if name not in PARAMS:
        close = difflib.get_close_matches(name, PARAMS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown setting {name!r}{hint} (settable: {', '.join(PARAMS)})")
    if name == "stop":
        words = shlex.split(value) if value else []
        return () if words in ([], ["none"]) else tuple(w.encode().decode("unicode_escape") for w in words)
    if name == "seed" and value.lower() in ("none", "random", "-"):
        return None
    try:
        return int(value) if name in _INT else float(value)
    except ValueError:
        kind = "an integer" if name in _INT else "a number"
        raise UsageError(f"/set {name}: {value!r} is not {kind}") from None


def _help(repl, arg: str):
    repl.ui.table(["command", "what it does"], HELP.items())
    repl.ui.note("Enter sends · Alt-Enter (Esc Enter) adds a line · Ctrl-X Ctrl-E opens $EDITOR · Ctrl-R searches history")


def _set(repl, arg: str):
    if not arg:
        p = repl.conv.params
        rows = [[k, _show(getattr(p, k)), repl.conv.param_source(k)] for k in PARAMS]
        repl.ui.table(["setting", "value", "from"], rows)
        return
    name, _, value = arg.partition(" ")
    if not value.strip() and name != "stop":
        raise UsageError(f"/set {name}: give a value, for example /set {name} 0.2")
    repl.conv.set_params(**{name: parse_value(name, value.strip())})
    repl.ui.note(f"{name} = {_show(getattr(repl.conv.params, name))}")


def _show(value) -> str:
    if isinstance(value, tuple):
        return " ".join(repr(v) for v in value) or "(none)"
    return "(none)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _system(repl, arg: str):
    if not arg:
        repl.ui.message("system", repl.conv.system_text() or "(no system prompt)")
        return
    repl.conv.set_system(arg)
    repl.ui.note("system prompt replaced")
    repl._count()


def _prompt(repl, arg: str):
    if not arg:
        repl.ui.note(f"prompt: {repl.conv.prompt_name or '-'} (/prompts lists them)")
        return
    if arg == "reload":
        repl.conv.reload_prompt()
        repl.ui.note(f"reloaded prompt {repl.conv.prompt_name}")
    else:
        repl.conv.use_prompt(arg)
        repl.ui.note(f"prompt: {repl.conv.prompt_name}")
    repl._count()


def _prompts(repl, arg: str):
    from chatcli.prompts import list_prompts

    errors: list = []
    rows = [[("* " if p.name == repl.conv.prompt_name else "  ") + p.name, p.description,
             " ".join(f"{k}={_show(v)}" for k, v in p.params.items())] for p in list_prompts(errors=errors)]
    repl.ui.table(["prompt", "description", "sets"], rows)
    for e in errors:
        repl.ui.error(str(e))


def _reset(repl, arg: str):
    repl.conv.reset()
    repl.ui.note("new conversation")
    repl._count()


def _undo(repl, arg: str):
    if not repl.conv.undo():
        raise UsageError("nothing to undo")
    repl.ui.note("dropped the last exchange")
    repl._count()


def _retry(repl, arg: str):
    repl.reply(repl.conv.retry(cancel=repl.cancel))


def _transcript(repl, arg: str):
    system = repl.conv.system_text()
    if system:
        repl.ui.message("system", system)
    turns = repl.conv.transcript()
    for t in turns:
        note = {"interrupted": "interrupted", "error": "incomplete", "length": "cut at max tokens"}.get(t.finish_reason or "", "")
        repl.ui.message(t.role, t.content, note)
    if not turns:
        repl.ui.note("(no messages yet)")


def _save(repl, arg: str):
    conv_id = repl.conv.save(arg or None)
    repl.ui.note(f"saved as conversation {conv_id}" + (f": {arg}" if arg else ""))


def _history(repl, arg: str):
    import datetime

    rows = [[i.id, i.title or "", i.model or "", i.turns, datetime.datetime.fromtimestamp(i.updated).strftime("%Y-%m-%d %H:%M")]
            for i in repl.conv.list_saved(limit=20)]
    repl.ui.table(["id", "title", "model", "turns", "updated"], rows)


def _load(repl, arg: str):
    if not arg:
        raise UsageError("/load ID: give a conversation id (/history lists them)")
    repl.conv.load(arg)
    repl.ui.note(f"loaded conversation {arg}")
    _transcript(repl, "")
    repl._count()


def _stats(repl, arg: str):
    from chatcli.ui import format_stats

    st = repl.stats
    if not st.replies:
        repl.ui.note("no replies yet")
        return
    approx = "~" if st.estimated else ""
    tps = (st.completion_tokens - st.replies) / st.decode_s if st.decode_s else 0.0
    ttft = sum(st.ttft_s) / len(st.ttft_s) if st.ttft_s else 0.0
    rows = [["replies", st.replies], ["interrupted", st.interrupted],
            ["prompt tokens", f"{approx}{st.prompt_tokens} ({st.cached_tokens} from cache)"],
            ["completion tokens", f"{approx}{st.completion_tokens}"], ["mean TTFT", f"{ttft:.2f} s"],
            ["decode speed", f"{tps:.1f} tok/s"], ["generation time", f"{st.total_s:.1f} s"],
            ["context", f"{repl.tokens_used} of {repl._context_length() or '?'} tokens"]]
    repl.ui.table(["session", ""], rows)
    del format_stats


def _model(repl, arg: str):
    if not arg:
        repl.ui.note(f"model: {repl.model} on {getattr(repl.backend, 'name', '?')}")
        return
    repl.backend.load(arg)
    repl.conv.set_model(arg)
    repl.model = arg.rstrip("/").rsplit("/", 1)[-1]
    repl.ui.note(f"model: {repl.model}")
    repl._count()


def _copy(repl, arg: str):
    text = repl.conv.last_reply()
    if text is None:
        raise UsageError("no reply to copy yet")
    if not sys.stdout.isatty():
        raise UsageError("/copy needs a terminal (it sends an OSC 52 escape that the terminal puts on the clipboard)")
    # OSC 52 only here, on the user's request; model text never reaches the terminal unsanitised otherwise.
    sys.stdout.write("\x1b]52;c;" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "\x07")
    sys.stdout.flush()
    repl.ui.note(f"copied {len(text)} characters (if your terminal allows OSC 52 clipboard access)")


def _exit(repl, arg: str):
    return EXIT


COMMANDS: dict[str, Callable] = {
    "/help": _help, "/set": _set, "/system": _system, "/prompt": _prompt, "/prompts": _prompts, "/reset": _reset,
    "/undo": _undo, "/retry": _retry, "/transcript": _transcript, "/save": _save, "/history": _history,
    "/load": _load, "/stats": _stats, "/model": _model, "/copy": _copy, "/exit": _exit,
}
