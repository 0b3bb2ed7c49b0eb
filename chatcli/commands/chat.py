"""`chatcli chat` and `chatcli ask`: thin Typer wrappers; the work is in chatcli.repl (no torch imported here)."""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Annotated, Optional

import typer

SAMPLING = "Sampling (same names in chat, ask and the config file)"
MODEL = "Model and backend"
CONV = "Conversation"
STRUCTURED = "Structured output"


def choices(key: str) -> type[Enum]:
    """A str Enum of the words settings.CHOICES allows for KEY: how Typer lists and checks a flag's choices."""
    from chatcli.settings import CHOICES

    return Enum(key.title().replace("_", ""), {v: v for v in CHOICES[key]}, type=str)


Model = Annotated[Optional[str], typer.Option("--model", "-m", metavar="MODEL", help="A store name (see `chatcli models`) or a model folder.", rich_help_panel=MODEL)]
Backend = Annotated[Optional[str], typer.Option("--backend", "-b", metavar="NAME", help="local, openai, or a [backends.NAME] profile from the config.", rich_help_panel=MODEL)]
BaseUrl = Annotated[Optional[str], typer.Option("--base-url", metavar="URL", help="Server URL for the openai backend (…/v1).", rich_help_panel=MODEL)]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", metavar="KEY", help="API key for the openai backend (default: $OPENAI_API_KEY).", rich_help_panel=MODEL)]
Dtype = Annotated[Optional[choices("dtype")], typer.Option("--dtype", help="Weights dtype for the local backend.", rich_help_panel=MODEL)]
Quant = Annotated[Optional[choices("quant")], typer.Option("--quant", help="Weight quantisation for the local backend.", rich_help_panel=MODEL)]
Compile = Annotated[Optional[choices("compile")], typer.Option("--compile", help="The compiled decode step of the local backend: auto (use a stored one; a chat builds one in the background), on (build it now, about a minute), off.", rich_help_panel=MODEL)]
Prompt = Annotated[Optional[str], typer.Option("--prompt", "-p", metavar="NAME", help="System prompt file from prompts/ (see `chatcli prompts list`).", rich_help_panel=CONV)]
System = Annotated[Optional[str], typer.Option("--system", "-s", metavar="TEXT", help="System prompt text (replaces the prompt file's body).", rich_help_panel=CONV)]
Var = Annotated[Optional[list[str]], typer.Option("--var", "-v", metavar="NAME=VALUE", help="Prompt variable NAME=VALUE (repeatable).", rich_help_panel=CONV)]
Plain = Annotated[bool, typer.Option("--plain", help="Plain text, no colour, no live rendering (also NO_COLOR, or when piped).")]
NoSave = Annotated[bool, typer.Option("--no-save", help="Keep this conversation out of the history database.", rich_help_panel=CONV)]
Continue = Annotated[bool, typer.Option("--continue", "-c", help="Continue the most recent conversation.", rich_help_panel=CONV)]
Resume = Annotated[Optional[str], typer.Option("--resume", metavar="ID", help="Continue conversation ID (see `chatcli history list`).", rich_help_panel=CONV)]
Think = Annotated[Optional[bool], typer.Option("--think/--no-think", help="A thinking model thinks before it answers, or not (--no-think renders its template with enable_thinking=False). Default: the template's.", rich_help_panel=CONV, show_default=False)]
ToolNames = Annotated[Optional[list[str]], typer.Option("--tool", "-T", metavar="NAME", help="Offer tool NAME to the model (repeatable; a Python tool, or SERVER_TOOL of an MCP server).", rich_help_panel="Tools")]
AllTools = Annotated[bool, typer.Option("--tools", help="Offer every tool (built-in, plugins, MCP servers).", rich_help_panel="Tools")]
YesTools = Annotated[bool, typer.Option("--yes-tools", help="Run the model's tool calls without asking (scripts).", rich_help_panel="Tools")]
ContextPolicy = Annotated[Optional[choices("context_policy")], typer.Option("--context-policy", help="When the context is full: drop-oldest (default) or error.", rich_help_panel=CONV)]


def with_sampling_flags(command):
    """Give COMMAND one option per sampling parameter, from the schema in chatcli.types (names, types, help); the
    values arrive in COMMAND's **sampling."""
    from chatcli.types import PARAMS

    sig = inspect.signature(command, eval_str=True)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    for name, spec in PARAMS.items():
        decls = [f"--{name.replace('_', '-')}", *([spec.short] if spec.short else [])]
        kind = list[str] if spec.kind is tuple else spec.kind
        option = typer.Option(*decls, metavar=spec.metavar, help=spec.help, rich_help_panel=SAMPLING, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[kind], option]))
    command.__signature__ = sig.replace(parameters=params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def options(given: dict):
    """Options from a command's arguments: choice flags as their words, sampling flags apart, not-given ones left out."""
    from chatcli.repl.boot import Options
    from chatcli.types import PARAM_NAMES

    values = {k: v.value if isinstance(v, Enum) else v for k, v in given.items()}
    sampling = {k: values.pop(k) for k in PARAM_NAMES if k in values}
    return Options(**values, sampling={k: v for k, v in sampling.items() if v is not None})


@with_sampling_flags
def chat(
    model: Model = None, prompt: Prompt = None, system: System = None, var: Var = None,
    backend: Backend = None, base_url: BaseUrl = None, api_key: ApiKey = None, dtype: Dtype = None, quant: Quant = None, compile: Compile = None,
    plain: Plain = False, no_save: NoSave = False, continue_: Continue = False, resume: Resume = None,
    context_policy: ContextPolicy = None, think: Think = None,
    hide_thinking: Annotated[bool, typer.Option("--hide-thinking", help="Do not show a thinking model's reasoning as it streams (/think shows it afterwards).", rich_help_panel=CONV)] = False,
    tool: ToolNames = None, all_tools: AllTools = False, yes_tools: YesTools = False,
    vi: Annotated[bool, typer.Option("--vi", help="Vi key bindings instead of emacs.")] = False,
    **sampling,
) -> None:
    """Chat in the terminal. Type /help inside for commands; Ctrl-C stops a reply, Ctrl-D saves and quits."""
    from chatcli.repl.loop import run_chat

    given = {k: v for k, v in locals().items() if k not in ("sampling", "run_chat")}
    given["vi"] = vi or None
    given["think"] = None if think is None else "on" if think else "off"
    raise typer.Exit(run_chat(options({**given, **sampling})))


@with_sampling_flags
def ask(
    question: Annotated[Optional[list[str]], typer.Argument(metavar="QUESTION", help="The question (words are joined). Piped stdin is appended after it.", show_default=False)] = None,
    file: Annotated[Optional[list[str]], typer.Option("--file", "-f", metavar="FILE", help="Attach a file's text (repeatable).", rich_help_panel=CONV)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: text, model, params, usage, timings, finish_reason.")] = False,
    max_input: Annotated[Optional[str], typer.Option("--max-input", metavar="SIZE", help="Most bytes of question, stdin and files together, such as 512k or 8M (default: what the model's context holds).", rich_help_panel=CONV)] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Complete the text as given: no system prompt, no chat template (base models, debugging).")] = False,
    json_object: Annotated[bool, typer.Option("--json-object", help="The answer is one JSON object (the decoder enforces it).", rich_help_panel=STRUCTURED)] = False,
    schema: Annotated[Optional[str], typer.Option("--schema", metavar="FILE|JSON", help="The answer is JSON that matches this JSON Schema (a file or the schema itself; the decoder enforces it).", rich_help_panel=STRUCTURED)] = None,
    show_thinking: Annotated[bool, typer.Option("--show-thinking", help="Send a thinking model's reasoning to stderr (stdout keeps only the answer).")] = False,
    model: Model = None, prompt: Prompt = None, system: System = None, var: Var = None,
    backend: Backend = None, base_url: BaseUrl = None, api_key: ApiKey = None, dtype: Dtype = None, quant: Quant = None, compile: Compile = None,
    plain: Plain = False, no_save: NoSave = False, continue_: Continue = False, resume: Resume = None,
    context_policy: ContextPolicy = None, think: Think = None,
    tool: ToolNames = None, all_tools: AllTools = False, yes_tools: YesTools = False,
    **sampling,
) -> None:
    """Ask one question and stream the answer to stdout. Example: cat notes.txt | chatcli ask "summarise this"."""
    from chatcli.repl.ask import run_ask

    given = {k: v for k, v in locals().items()
             if k not in ("question", "file", "as_json", "raw", "max_input", "show_thinking", "sampling", "run_ask",
                          "json_object", "schema")}
    given["think"] = None if think is None else "on" if think else "off"
    opts = options({**given, **sampling})
    raise typer.Exit(run_ask(opts, question=" ".join(question or []), files=file or [], as_json=as_json, raw=raw,
                            max_input=max_input, structured=(json_object, schema), show_thinking=show_thinking))


def register(app: typer.Typer) -> None:
    """Add `chat` and `ask`."""
    app.command("chat")(chat)
    app.command("ask")(ask)
