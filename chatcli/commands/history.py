"""`chatcli history list|show|export|rm|search`: the saved conversations in the data dir's history.db."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

history_app = typer.Typer(help="Saved conversations: list, show, export, remove, search.", no_args_is_help=True,
                          rich_markup_mode=None)

Id = Annotated[str, typer.Argument(metavar="ID", help="Conversation id (see `chatcli history list`), or 'last'.", show_default=False)]
Plain = Annotated[bool, typer.Option("--plain", help="Plain text, no colour.")]


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _open():
    from chatcli.history import History

    return History()


def _id(store, value: str) -> int:
    from chatcli.errors import UsageError

    if value.strip().lower() == "last":
        found = store.last_id()
        if found is None:
            raise UsageError("there are no saved conversations yet")
        return found
    try:
        conv_id = int(value)
    except ValueError:
        raise UsageError(f"conversation id must be a number or 'last', got {value!r} (`chatcli history list` shows them)") from None
    return conv_id


@history_app.command("list")
def list_(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N conversations (0: all).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    plain: Plain = False,
) -> None:
    """Saved conversations, newest first: id, title, model, number of turns and date."""
    import json
    from dataclasses import asdict

    store = _open()
    infos = store.list(limit or None)
    if as_json:
        typer.echo(json.dumps([asdict(i) for i in infos], indent=2, ensure_ascii=False))
        return
    if not infos:
        typer.echo("no saved conversations yet", err=True)
        return
    from chatcli.ui import UI

    UI(plain=plain).table(["id", "title", "model", "turns", "updated"],
                          [[i.id, i.title or "", i.model or "", i.turn_count, _when(i.updated)] for i in infos])


@history_app.command("show")
def show(conv_id: Id, plain: Plain = False) -> None:
    """One conversation, as Markdown (rendered on a terminal)."""
    from chatcli.history import to_markdown
    from chatcli.ui import UI

    store = _open()
    info, turns = store.get(_id(store, conv_id))
    text = to_markdown(info, turns)
    ui = UI(plain=plain)
    if ui.plain:
        from chatcli.ui.sanitize import sanitize

        typer.echo(sanitize(text), nl=False)
    else:
        from chatcli.ui.markdown import SafeMarkdown
        from chatcli.ui.sanitize import sanitize

        ui.console.print(SafeMarkdown(sanitize(text)))


@history_app.command("export")
def export(
    conv_id: Id,
    fmt: Annotated[str, typer.Option("--format", "-F", metavar="FORMAT", help="markdown or json.")] = "markdown",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")] = None,
) -> None:
    """Export a conversation as Markdown or JSON (raw text, as stored)."""
    import os

    from chatcli.errors import StoreError, UsageError
    from chatcli.history import to_json, to_markdown

    if fmt not in ("markdown", "md", "json"):
        raise UsageError(f"--format must be markdown or json, got {fmt!r}")
    store = _open()
    info, turns = store.get(_id(store, conv_id))
    text = to_json(info, turns) + "\n" if fmt == "json" else to_markdown(info, turns)
    if output is None:
        import sys

        if sys.stdout.isatty():  # raw model text may hold escape sequences; a terminal gets it sanitised
            from chatcli.ui.sanitize import sanitize

            text = sanitize(text)
        typer.echo(text, nl=False)
        return
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    try:  # whole or not at all
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {output}: {e.strerror}") from None
    typer.echo(f"wrote {output}", err=True)


@history_app.command("rm")
def rm(
    conv_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Conversation ids to delete for good.", show_default=False)],
) -> None:
    """Delete conversations and all their turns."""
    store = _open()
    ids = [_id(store, c) for c in conv_ids]
    for conv_id in ids:
        store.get(conv_id)  # all must exist before any is removed
    for conv_id in ids:
        store.remove(conv_id)
        typer.echo(f"removed conversation {conv_id}", err=True)


@history_app.command("search")
def search(
    text: Annotated[list[str], typer.Argument(metavar="TEXT", help="Words to find (all of them, any order).", show_default=False)],
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N matches.")] = 20,
    plain: Plain = False,
) -> None:
    """Full-text search over every saved message."""
    from chatcli.ui import UI
    from chatcli.ui.sanitize import sanitize

    store = _open()
    hits = store.search(" ".join(text), limit=limit)
    if not hits:
        typer.echo("no matches", err=True)
        raise typer.Exit(1)
    UI(plain=plain).table(["id", "title", "role", "match"],
                          [[info.id, sanitize(info.title or ""), turn.role, sanitize(" ".join(snip.split()))]
                           for info, turn, snip in hits])


def register(app: typer.Typer) -> None:
    """Add the `history` group."""
    app.add_typer(history_app, name="history")
