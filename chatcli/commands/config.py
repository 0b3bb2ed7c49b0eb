"""`chatcli config`: the settings in effect and where each came from (default < config file < CHATCLI_* < flag)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

config_app = typer.Typer(help="Show the settings in effect and where they come from.", no_args_is_help=True,
                         rich_markup_mode=None)


@config_app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Plain text, no colour.")] = False,
) -> None:
    """Print every setting, its value and its source, then the paths chatcli uses."""
    from chatcli import settings
    from chatcli.ui import UI

    s = settings.load_settings()
    paths = {
        "home": settings.home(),
        "models_dir": settings.models_dir(),
        "prompts_dir": settings.prompts_dir(),
        "data_dir": settings.data_dir(),
        "config": settings.config_path(),
    }
    if as_json:
        out = {
            "settings": {k: {"value": s.values[k], "source": s.sources[k]} for k in s.values},
            "paths": {k: str(v) for k, v in paths.items()},
            "backends": s.raw.get("backends", {}) if isinstance(s.raw.get("backends"), dict) else {},
        }
        # A backend profile may hold an api_key; `config show` is often pasted into bug reports.
        for profile in out["backends"].values():
            if isinstance(profile, dict) and profile.get("api_key"):
                profile["api_key"] = "***"
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    ui = UI(plain=plain)
    ui.table(["setting", "value", "source"],
             [[k, "" if v is None else json.dumps(list(v) if isinstance(v, tuple) else v) if isinstance(v, (bool, tuple)) else v,
               s.sources[k]]
              for k, v in s.values.items()])
    ui.line()
    exists = {"config": settings.config_path().is_file()}
    ui.table(["path", "location", ""],
             [[k, v, ("" if exists.get(k, True) else "(not created yet)")] for k, v in paths.items()])
    profiles = s.raw.get("backends", {})
    if isinstance(profiles, dict) and profiles:
        ui.line()
        ui.table(["backend profile", "keys"],
                 [[name, ", ".join(sorted(p)) if isinstance(p, dict) else "?"] for name, p in profiles.items()])


@config_app.command("path")
def path() -> None:
    """Print the config file's path (it may not exist yet)."""
    from chatcli import settings

    typer.echo(str(settings.config_path()))


def register(app: typer.Typer) -> None:
    """Add the `config` group."""
    app.add_typer(config_app, name="config")
