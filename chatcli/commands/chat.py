"""`chatcli chat` and `chatcli ask`: thin Typer wrappers; the work is in chatcli.repl (no torch imported here)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

SAMPLING = "Sampling (same names in chat, ask and the config file)"
MODEL = "Model and backend"
CONV = "Conversation"

Model = Annotated[Optional[str], typer.Option("--model", "-m", metavar="MODEL", help="A store name (see `chatcli models`) or a model folder.", rich_help_panel=MODEL)]
Backend = Annotated[Optional[str], typer.Option("--backend", "-b", metavar="NAME", help="local, openai, or a [backends.NAME] profile from the config.", rich_help_panel=MODEL)]
BaseUrl = Annotated[Optional[str], typer.Option("--base-url", metavar="URL", help="Server URL for the openai backend (…/v1).", rich_help_panel=MODEL)]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", metavar="KEY", help="API key for the openai backend (default: $OPENAI_API_KEY).", rich_help_panel=MODEL)]
Dtype = Annotated[Optional[str], typer.Option("--dtype", metavar="DTYPE", help="Weights dtype for the local backend: auto, float32 or bfloat16.", rich_help_panel=MODEL)]
Quant = Annotated[Optional[str], typer.Option("--quant", metavar="QUANT", help="Weight quantisation for the local backend (none, int8, int4).", rich_help_panel=MODEL)]
Compile = Annotated[Optional[str], typer.Option("--compile", metavar="MODE", help="The compiled decode step of the local backend: auto (use a stored one; a chat builds one in the background), on (build it now, about a minute), off.", rich_help_panel=MODEL)]
Prompt = Annotated[Optional[str], typer.Option("--prompt", "-p", metavar="NAME", help="System prompt file from prompts/ (see `chatcli prompts list`).", rich_help_panel=CONV)]
System = Annotated[Optional[str], typer.Option("--system", "-s", metavar="TEXT", help="System prompt text (replaces the prompt file's body).", rich_help_panel=CONV)]
Var = Annotated[Optional[list[str]], typer.Option("--var", "-v", metavar="NAME=VALUE", help="Prompt variable NAME=VALUE (repeatable).", rich_help_panel=CONV)]
Temperature = Annotated[Optional[float], typer.Option("--temperature", "-t", metavar="TEMP", help="0 is greedy; higher is more random.", rich_help_panel=SAMPLING)]
TopP = Annotated[Optional[float], typer.Option("--top-p", metavar="P", help="Nucleus sampling, in (0, 1].", rich_help_panel=SAMPLING)]
TopK = Annotated[Optional[int], typer.Option("--top-k", metavar="K", help="Keep the K likeliest tokens (0: off).", rich_help_panel=SAMPLING)]
MinP = Annotated[Optional[float], typer.Option("--min-p", metavar="P", help="Drop tokens below MIN_P × the top probability (0: off).", rich_help_panel=SAMPLING)]
RepeatPenalty = Annotated[Optional[float], typer.Option("--repeat-penalty", metavar="X", help="Penalise repeated tokens (1: off).", rich_help_panel=SAMPLING)]
Seed = Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Random seed, for reproducible replies.", rich_help_panel=SAMPLING)]
MaxTokens = Annotated[Optional[int], typer.Option("--max-tokens", metavar="N", help="Most tokens in one reply.", rich_help_panel=SAMPLING)]
Stop = Annotated[Optional[list[str]], typer.Option("--stop", metavar="TEXT", help="Stop when the reply contains this text (repeatable).", rich_help_panel=SAMPLING)]
Plain = Annotated[bool, typer.Option("--plain", help="Plain text, no colour, no live rendering (also NO_COLOR, or when piped).")]
NoSave = Annotated[bool, typer.Option("--no-save", help="Keep this conversation out of the history database.", rich_help_panel=CONV)]
Continue = Annotated[bool, typer.Option("--continue", "-c", help="Continue the most recent conversation.", rich_help_panel=CONV)]
Resume = Annotated[Optional[str], typer.Option("--resume", metavar="ID", help="Continue conversation ID (see `chatcli history list`).", rich_help_panel=CONV)]
ContextPolicy = Annotated[Optional[str], typer.Option("--context-policy", metavar="POLICY", help="When the context is full: drop-oldest (default) or error.", rich_help_panel=CONV)]


def chat(
    model: Model = None, prompt: Prompt = None, system: System = None, var: Var = None,
    backend: Backend = None, base_url: BaseUrl = None, api_key: ApiKey = None, dtype: Dtype = None, quant: Quant = None, compile: Compile = None,
    temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None, min_p: MinP = None,
    repeat_penalty: RepeatPenalty = None, seed: Seed = None, max_tokens: MaxTokens = None, stop: Stop = None,
    plain: Plain = False, no_save: NoSave = False, continue_: Continue = False, resume: Resume = None,
    context_policy: ContextPolicy = None,
    vi: Annotated[bool, typer.Option("--vi", help="Vi key bindings instead of emacs.")] = False,
) -> None:
    """Chat in the terminal. Type /help inside for commands; Ctrl-C stops a reply, Ctrl-D saves and quits."""
    given = dict(locals())  # every option by name, before any import adds names
    from chatcli.repl.boot import Options
    from chatcli.repl.loop import run_chat

    given["vi"] = vi or None
    opts = Options(**given)
    raise typer.Exit(run_chat(opts))


def ask(
    question: Annotated[Optional[list[str]], typer.Argument(metavar="QUESTION", help="The question (words are joined). Piped stdin is appended after it.", show_default=False)] = None,
    file: Annotated[Optional[list[str]], typer.Option("--file", "-f", metavar="FILE", help="Attach a file's text (repeatable).", rich_help_panel=CONV)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: text, model, params, usage, timings, finish_reason.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Complete the text as given: no system prompt, no chat template (base models, debugging).")] = False,
    model: Model = None, prompt: Prompt = None, system: System = None, var: Var = None,
    backend: Backend = None, base_url: BaseUrl = None, api_key: ApiKey = None, dtype: Dtype = None, quant: Quant = None, compile: Compile = None,
    temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None, min_p: MinP = None,
    repeat_penalty: RepeatPenalty = None, seed: Seed = None, max_tokens: MaxTokens = None, stop: Stop = None,
    plain: Plain = False, no_save: NoSave = False, continue_: Continue = False, resume: Resume = None,
    context_policy: ContextPolicy = None,
) -> None:
    """Ask one question and stream the answer to stdout. Example: cat notes.txt | chatcli ask "summarise this"."""
    given = {k: v for k, v in locals().items() if k not in ("question", "file", "as_json", "raw")}
    from chatcli.repl.ask import run_ask
    from chatcli.repl.boot import Options

    opts = Options(**given)
    raise typer.Exit(run_ask(opts, question=" ".join(question or []), files=file or [], as_json=as_json, raw=raw))


def register(app: typer.Typer) -> None:
    """Add `chat` and `ask`."""
    app.command("chat")(chat)
    app.command("ask")(ask)
