"""`chatcli prompts list|show|new|edit|render`: the system prompt files in $CHATCLI_HOME/prompts (and the packaged ones)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

prompts_app = typer.Typer(help="List, show, create, edit and debug system prompt files.", no_args_is_help=True,
                          rich_markup_mode=None)

Name = Annotated[str, typer.Argument(metavar="NAME", help="Prompt name (a file prompts/NAME.md).", show_default=False)]
Var = Annotated[Optional[list[str]], typer.Option("--var", "-v", metavar="NAME=VALUE", help="Prompt variable (repeatable).")]


def _settings_text(params: dict) -> str:
    return " ".join(f"{k}={json.dumps(list(v)) if isinstance(v, tuple) else v}" for k, v in params.items())


def _write_new(path: Path, text: str) -> None:
    """Write a new file whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@prompts_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Plain text, no colour.")] = False,
) -> None:
    """Each prompt's name, description and the settings it sets; user files override packaged ones."""
    from chatcli.errors import LoadError
    from chatcli.prompts import list_prompts

    errors: list[LoadError] = []
    found = list_prompts(errors)
    if as_json:
        typer.echo(json.dumps([{"name": p.name, "description": p.description, "settings": p.params,
                                "template": p.template, "variables": p.variables, "path": str(p.path),
                                "packaged": p.packaged} for p in found], indent=2, default=list))
    else:
        from chatcli.ui import UI

        UI(plain=plain).table(["name", "description", "settings", "from"],
                              [[p.name, p.description, _settings_text(p.params) + (" template" if p.template else ""),
                                "packaged" if p.packaged else "prompts/"] for p in found])
    for e in errors:
        typer.echo(f"chatcli: warning: {e}", err=True)


@prompts_app.command("show")
def show(
    name: Name,
    var: Var = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Value of the {{ model }} variable.")] = "MODEL",
) -> None:
    """The prompt file as written, then the system prompt it renders to."""
    from chatcli.prompts import load_prompt, parse_variables, render_system

    prompt = load_prompt(name)
    text = render_system(prompt, parse_variables(var), model)
    typer.echo(f"# {prompt.path}{' (packaged)' if prompt.packaged else ''}")
    typer.echo(prompt.path.read_text(encoding="utf-8", errors="replace").rstrip("\n"))
    typer.echo("\n# rendered system prompt")
    typer.echo(text)


@prompts_app.command("new")
def new(
    name: Name,
    from_: Annotated[str, typer.Option("--from", metavar="PROMPT", help="Start from this prompt's file.")] = "default",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file in prompts/.")] = False,
) -> None:
    """Create prompts/NAME.md as a copy of another prompt, ready to edit."""
    from chatcli import settings
    from chatcli.errors import UsageError
    from chatcli.names import check_name
    from chatcli.prompts import load_prompt

    check_name(name, "prompt")
    path = settings.prompts_dir() / f"{name}.md"
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; edit it with `chatcli prompts edit {name}` or pass --force")
    source = load_prompt(from_)
    _write_new(path, source.path.read_text(encoding="utf-8"))
    typer.echo(f"created {path} (from {source.name}); edit it with `chatcli prompts edit {name}`")


def _validate(path: Path, name: str) -> str | None:
    """The error line for the file, or None when it loads and renders."""
    from chatcli.errors import LoadError
    from chatcli.prompts import read_prompt_file, render_system

    try:
        render_system(read_prompt_file(path, name), {}, "MODEL")
    except LoadError as e:
        if "undefined variable" in str(e):  # may be meant for -v at run time: say so, but the file is fine
            typer.echo(f"chatcli: note: {e}", err=True)
            return None
        return str(e)
    return None


@prompts_app.command("edit")
def edit(name: Name) -> None:
    """Open prompts/NAME.md in $VISUAL or $EDITOR, validate it, and reopen it while it is broken."""
    from chatcli import settings
    from chatcli.errors import LoadError, UsageError
    from chatcli.prompts import prompt_path

    path, packaged = prompt_path(name)
    if packaged:  # edit a copy in the user folder; the packaged file stays as shipped
        user = settings.prompts_dir() / f"{name}.md"
        _write_new(user, path.read_text(encoding="utf-8"))
        typer.echo(f"copied the packaged {name!r} prompt to {user}")
        path = user
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    for _attempt in range(20):
        before = path.read_bytes()
        try:
            rc = subprocess.call([*shlex.split(editor), str(path)])
        except OSError as e:
            raise UsageError(f"cannot run the editor {editor!r} ({e.strerror}); set $EDITOR") from None
        if rc != 0:
            raise UsageError(f"the editor {editor!r} exited with status {rc}; {path} is left as it is")
        error = _validate(path, name)
        if error is None:
            typer.echo(f"{path}: ok")
            return
        typer.echo(f"chatcli: error: {error}", err=True)
        if sys.stdin.isatty():
            if not typer.confirm("Reopen the editor?", default=True):
                raise LoadError(error)
        elif path.read_bytes() == before:  # no terminal to ask, and the last edit changed nothing: stop
            raise LoadError(error)
    raise LoadError(f"{path} is still broken after 20 edits")


@prompts_app.command("render")
def render(
    name: Name,
    model: Annotated[Optional[str], typer.Option("--model", "-m", metavar="MODEL", help="Model whose template and tokenizer to use.")] = None,
    var: Var = None,
    message: Annotated[str, typer.Option("--message", metavar="TEXT", help="The user message to render after the system prompt.")] = "Hello!",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: text, token ids, pieces, stop strings.")] = False,
) -> None:
    """Print the exact text and tokens that would go to the model for NAME and one user message."""
    from chatcli import settings
    from chatcli.engine.tokenizer import load_tokenizer
    from chatcli.prompts import load_prompt, parse_variables, render_system
    from chatcli.store.resolve import resolve_model
    from chatcli.templates import render_chat
    from chatcli.types import Message

    model = model or settings.load_settings()["model"]
    folder = resolve_model(model)
    tok = load_tokenizer(folder)
    prompt = load_prompt(name)
    system = render_system(prompt, parse_variables(var), folder.name)
    messages = ([Message("system", system)] if system else []) + [Message("user", message)]
    rendered = render_chat(prompt.template or tok.chat_template, messages, bos_token=tok.bos_token, eos_token=tok.eos_token)
    ids = tok.encode(rendered.text, add_special_tokens=False)
    if rendered.plain and tok.add_bos_token:  # the plain template has no BOS of its own
        ids = [tok.bos_token_id, *ids]
    pieces = [tok.id_to_piece(i) for i in ids]
    source = "the prompt file's template" if prompt.template else "the model's template" if tok.chat_template else "the classic template"
    if as_json:
        typer.echo(json.dumps({"prompt": prompt.name, "model": model, "template": source, "text": rendered.text,
                               "tokens": ids, "pieces": pieces, "stop": list(rendered.stop),
                               "folded_system": rendered.folded_system}, indent=2, ensure_ascii=False))
        return
    typer.echo(f"# prompt {prompt.name}, model {model}, {source}: {len(ids)} tokens")
    if rendered.folded_system:
        typer.echo("# the template has no system role: the system prompt was folded into the user message")
    typer.echo("# text (exactly, between the lines)\n" + "-" * 40)
    typer.echo(rendered.text)
    typer.echo("-" * 40 + "\n# tokens: id piece")
    for i, piece in zip(ids, pieces):
        typer.echo(f"{i:>7} {json.dumps(piece, ensure_ascii=False)}")
    if rendered.stop:
        typer.echo(f"# stop strings: {json.dumps(list(rendered.stop))}")


def register(app: typer.Typer) -> None:
    """Add the `prompts` group."""
    app.add_typer(prompts_app, name="prompts")
