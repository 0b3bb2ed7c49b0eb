"""Slash commands. Each takes the Repl and the rest of the line; a bad one is one error line and the chat goes on."""

from __future__ import annotations

import base64
import difflib
import sys
from collections.abc import Callable

from chatcli.errors import UsageError
from chatcli.repl.boot import compile_in_background
from chatcli.repl.conversation import last_reply, param_source, parse_id
from chatcli.types import PARAM_NAMES

EXIT = object()  # returned by /exit

HELP: dict[str, str] = {
    "/help": "this list",
    "/set": f"/set NAME VALUE ({', '.join(PARAM_NAMES)}, think on|off|auto, think_budget N, tool_rounds N; VALUE "
            "default undoes it); /set alone shows them; /set json on|off, /set schema FILE|JSON|off constrain replies "
            "to JSON",
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
    "/tokens": "/tokens TEXT shows how the model's tokenizer cuts TEXT",
    "/probs": "/probs on|off colours each reply's tokens by their probability",
    "/think": "show the last reply's reasoning in full (a thinking model's)",
    "/tools": "/tools lists the tools; /tools on|off NAME (or all) offers or withholds one",
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
        return [*PARAM_NAMES, *STRUCTURED, *THINK_SETTINGS]
    if name == "/prompt":
        from chatcli.prompts import list_prompts

        return ["reload", *(p.name for p in list_prompts(errors=[]))]
    if name == "/probs":
        return ["on", "off"]
    if name == "/tools":
        return ["on", "off"]
    if name == "/model":
        try:
            return list(repl.backend.models())
        except Exception:  # completion must never break the prompt (a server may be down)
            return []
    return []


def _help(repl, arg: str):
    repl.ui.table(["command", "what it does"], HELP.items())
    repl.ui.note("Enter sends · Alt-Enter (Esc Enter) adds a line · Ctrl-X Ctrl-E opens $EDITOR · Ctrl-R searches history")


def _set(repl, arg: str):
    if not arg:
        p = repl.conv.params
        rows = [[k, _show(getattr(p, k)), param_source(repl.conv, k)] for k in PARAM_NAMES]
        from chatcli.structured import describe

        rows.append(["format", describe(repl.conv.response_format), "set" if repl.conv.response_format else "default"])
        if hasattr(repl.backend, "think"):
            word = {None: "auto", True: "on", False: "off"}[repl.backend.think]
            rows += [["think", word, "-"], ["think_budget", str(getattr(repl.backend, "think_budget", None)
                                                                       or "no limit"), "-"]]
        if getattr(repl, "tools", None) is not None:
            rows.append(["tool_rounds", str(repl.tools.rounds), "chat"])
        repl.ui.table(["setting", "value", "from"], rows)
        return
    name, _, value = arg.partition(" ")
    if name in STRUCTURED:
        _set_format(repl, name, value.strip())
        return
    if name in THINK_SETTINGS:
        repl.ui.note(_set_think(repl.backend, name, value.strip()))
        return
    if name == "tool_rounds":  # a chat setting, not a sampling parameter
        from chatcli.repl.tools import set_rounds

        return set_rounds(repl, value.strip())
    if not value.strip() and name != "stop":
        raise UsageError(f"/set {name}: give a value, for example /set {name} 0.2")
    value = repl.conv.set_param(name, value.strip())
    getattr(repl.conv, "param_origin", {}).pop(name, None)
    repl.ui.note(f"{name} = {_show(value)}")


STRUCTURED = ("json", "schema")  # /set names that are not sampling parameters: the reply's format


def _set_format(repl, name: str, value: str) -> None:
    """/set json on|off, /set schema FILE|JSON|off: every later reply is constrained to that JSON."""
    from chatcli.structured import JSON_OBJECT, describe, read_schema, require_support, schema_format

    word = value.lower()
    if word not in ("off", "default", "none"):
        require_support(repl.backend)
    if word in ("off", "default", "none"):
        repl.conv.response_format = None
    elif name == "json" and word == "on":
        repl.conv.response_format = JSON_OBJECT
    elif name == "json":
        raise UsageError("/set json on|off")
    elif not value:
        raise UsageError("/set schema FILE|JSON|off, for example /set schema person.json")
    else:
        repl.conv.response_format = schema_format(read_schema(value, "/set schema"))
    repl.ui.note(f"format = {describe(repl.conv.response_format)}")


THINK_SETTINGS = ("think", "think_budget")


def _set_think(backend, name: str, value: str) -> str:
    """/set think on|off|auto and /set think_budget N (0 or default: no limit) on the backend; what is in effect now."""
    from chatcli.repl.boot import THINK, apply_think

    if not hasattr(backend, name):
        raise UsageError(f"/set {name}: the {getattr(backend, 'name', 'current')} backend has no {name} setting")
    if name == "think":
        word = {"default": "auto", "true": "on", "false": "off"}.get(value.lower(), value.lower())
        if word not in THINK:
            raise UsageError(f"/set think: give on, off or auto, got {value!r}")
        apply_think(backend, word)
        return f"think = {word}"
    text = "0" if value.lower() in ("default", "none", "off") else value
    try:
        budget = int(text)
    except ValueError:
        raise UsageError(f"/set think_budget: give a number of tokens (0: no limit), got {value!r}") from None
    apply_think(backend, None, budget)
    return f"think_budget = {budget or 'no limit'}"


def _show(value) -> str:
    if isinstance(value, tuple):
        return " ".join(repr(v) for v in value) or "(none)"
    return "(none)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _system(repl, arg: str):
    if not arg:
        repl.ui.message("system", repl.conv.system or "(no system prompt)")
        return
    repl.conv.set_system(arg)
    repl.ui.note("system prompt replaced")
    repl._count()


def _prompt(repl, arg: str):
    if not arg:
        repl.ui.note(f"prompt: {repl.conv.prompt.name} (/prompts lists them)")
        return
    if arg == "reload":
        prompt = repl.conv.reload_prompt()
        repl.ui.note(f"reloaded prompt {prompt.name} from {prompt.path}")
    else:
        prompt = repl.conv.switch_prompt(arg)
        repl.ui.note(f"prompt: {prompt.name}" + (f" ({prompt.description})" if prompt.description else ""))
    # As at start: the prompt file's think: applies unless the config, CHATCLI_THINK or a flag chose it.
    if prompt.think and hasattr(repl.backend, "think") and repl.settings.sources.get("think", "default") == "default":
        repl.ui.note(_set_think(repl.backend, "think", prompt.think))
    repl._count()


def _prompts(repl, arg: str):
    from chatcli.prompts import list_prompts

    errors: list = []
    rows = [[("* " if p.name == repl.conv.prompt.name else "  ") + p.name, p.description,
             " ".join(f"{k}={_show(v)}" for k, v in p.params.items())] for p in list_prompts(errors=errors)]
    repl.ui.table(["prompt", "description", "sets"], rows)
    for e in errors:
        repl.ui.error(str(e))


def _reset(repl, arg: str):
    repl.conv.reset()
    repl.ui.note("new conversation")
    repl._count()


def _undo(repl, arg: str):
    removed = repl.conv.undo()
    repl.ui.note(f"dropped the last exchange ({_clip(removed)})")
    repl._count()


def _retry(repl, arg: str):
    repl.follow(repl.reply(repl.conv.retry()))


def _transcript(repl, arg: str):
    if repl.conv.system:
        repl.ui.message("system", repl.conv.system)
    turns = repl.conv.turns
    for t in turns:
        note = {"interrupted": "interrupted", "error": "incomplete", "length": "cut at max tokens"}.get(t.finish_reason or "", "")
        if t.tool_calls or t.role == "tool":
            from chatcli.repl.tools import transcript_lines

            note = ", ".join(x for x in (note, f"result of {t.tool_call_id}" if t.role == "tool" else "") if x)
            repl.ui.message(t.role, "\n\n".join(x for x in (t.content, transcript_lines(t)) if x), note)
            continue
        repl.ui.message(t.role, t.content, note)
    if not turns:
        repl.ui.note("(no messages yet)")


def _save(repl, arg: str):
    conv_id = repl.conv.save(arg or None)
    repl.ui.note(f"saved as conversation {conv_id}" + (f": {arg}" if arg else ""))


def _history(repl, arg: str):
    import datetime

    rows = [[i.id, i.title or "", i.model or "", getattr(i, "turn_count", getattr(i, "turns", "")), datetime.datetime.fromtimestamp(i.updated).strftime("%Y-%m-%d %H:%M")]
            for i in _store(repl).list(limit=20)]
    repl.ui.table(["id", "title", "model", "turns", "updated"], rows)


def _load(repl, arg: str):
    if not arg:
        raise UsageError("/load ID: give a conversation id (/history lists them)")
    info = repl.conv.load(parse_id(arg))
    repl.notices()
    repl.ui.note(f"loaded conversation {info.id}: {info.title or ''}")
    _transcript(repl, "")
    repl._count()


def _stats(repl, arg: str):
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
            ["context", f"{repl.tokens_used} of {repl.context_length or '?'} tokens"]]
    repl.ui.table(["session", ""], rows)


def _model(repl, arg: str):
    if not arg:
        repl.ui.note(f"model: {repl.model} on {getattr(repl.backend, 'name', '?')}")
        return
    repl.backend.load(arg)  # the local backend pulls a catalog or hf: model that is not in the store yet
    from chatcli.store import hub

    local_hub = hub.is_spec(arg) and getattr(repl.backend, "name", "") == "local"
    repl.model = hub.parse(arg).store_name if local_hub else arg.rstrip("/").rsplit("/", 1)[-1]
    repl.conv.model = repl.model
    if not repl.conv.custom_system:  # the system prompt may name the model ({{ model }})
        repl.conv.reload_prompt()
    repl.ui.note(f"model: {repl.model}")
    compile_in_background(repl.backend)  # its notice, if any, reaches the chat through on_notice
    repl._count()


def _copy(repl, arg: str):
    text = last_reply(repl.conv)
    if text is None:
        raise UsageError("no reply to copy yet")
    if not sys.stdout.isatty():
        raise UsageError("/copy needs a terminal (it sends an OSC 52 escape that the terminal puts on the clipboard)")
    # OSC 52 only here, on the user's request; model text never reaches the terminal unsanitised otherwise.
    sys.stdout.write("\x1b]52;c;" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "\x07")
    sys.stdout.flush()
    repl.ui.note(f"copied {len(text)} characters (if your terminal allows OSC 52 clipboard access)")


def _clip(text: str, width: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _store(repl):
    from chatcli.history import History

    if repl.conv.history is None:
        repl.conv.history = History()  # StoreError says why it cannot be opened
    return repl.conv.history


def _tokens(repl, arg: str):
    from chatcli.inspectui.repl_hooks import slash_tokens

    slash_tokens(repl.ui.console, repl.backend, arg)


def _probs(repl, arg: str):
    from chatcli.inspectui.repl_hooks import slash_probs

    on = slash_probs(repl.backend, arg)
    repl.ui.note("token probabilities on: shown after each reply" if on else "token probabilities off")


def _think(repl, arg: str):
    """/think: the last reply's reasoning in full."""
    last = next((t for t in reversed(repl.conv.turns) if t.role == "assistant"), None)
    if last is None or not last.reasoning:
        repl.ui.note("the last reply has no reasoning")
        return
    from chatcli.ui.sanitize import sanitize

    repl.ui.line("thinking", style="dim")
    repl.ui.line(sanitize(last.reasoning), style="dim")


def _exit(repl, arg: str):
    return EXIT


def _tools(repl, arg: str):
    from chatcli.repl.tools import command

    command(repl, arg)


COMMANDS: dict[str, Callable] = {
    "/help": _help, "/think": _think, "/set": _set, "/system": _system, "/prompt": _prompt, "/prompts": _prompts, "/reset": _reset,
    "/undo": _undo, "/retry": _retry, "/transcript": _transcript, "/save": _save, "/history": _history,
    "/load": _load, "/stats": _stats, "/model": _model, "/copy": _copy, "/tokens": _tokens, "/probs": _probs,
    "/exit": _exit, "/tools": _tools,
}
