"""Turn a --model value (a store name or a folder path) into a model folder."""

from __future__ import annotations

import os
from pathlib import Path

from chatcli import settings
from chatcli.errors import LoadError, UsageError
from chatcli.names import check_name, inside


def looks_like_path(value: str) -> bool:
    """A value with a path separator, a leading '.' or '~', or an existing folder is a path, not a store name."""
    return os.sep in value or value.startswith((".", "~")) or (os.altsep is not None and os.altsep in value)


def resolve_model(model: str | None, models_dir: str | os.PathLike | None = None) -> Path:
    """The folder for MODEL: a path to a model folder, a name in the store, or an hf: spec; a catalog name or hf:
    spec that is not in the store yet is pulled first, with progress on stderr, as `ollama run` does."""
    model = model or settings.DEFAULT_MODEL
    if "\x00" in model:
        raise UsageError("invalid model name: it contains a NUL byte")
    from chatcli.store import hub

    if hub.is_spec(model):  # before the path test: hf:ORG/REPO has a '/'
        return _hub_model(hub.parse(model), models_dir)
    if looks_like_path(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise LoadError(f"model folder {path} does not exist")
        return path.resolve()
    check_name(model)
    root = settings.models_dir(models_dir)
    path = root / model
    if path.is_dir():
        return inside(root, path)
    if auto_pull_enabled() and (model == settings.DEFAULT_MODEL or _in_catalog(model, models_dir)):
        # The default and every catalog model work out of the box: the first use pulls it once.
        from chatcli.store.pull import ensure_model

        return inside(root, ensure_model(model, models_dir))
    from chatcli.store.catalog import load_catalog, suggest

    stored = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    known = sorted({*load_catalog(models_dir), *stored})
    raise LoadError(f"model {model!r} is not in the store ({root}){suggest(model, known)}; run `chatcli pull {model}` "
                    "or pass a folder path")


def _in_catalog(name: str, models_dir) -> bool:
    from chatcli.store.catalog import load_catalog

    return name in load_catalog(models_dir)


def _hub_model(spec, models_dir) -> Path:
    root = settings.models_dir(models_dir)
    path = root / spec.store_name
    if path.is_dir():
        from chatcli.store.pull import check_hub_folder

        check_hub_folder(path, spec)
        return inside(root, path)
    if not auto_pull_enabled():
        raise LoadError(f"{spec} is not in the store ({root}); run `chatcli pull {spec}` (CHATCLI_AUTO_PULL is off)")
    from chatcli.store.progress import Progress
    from chatcli.store.pull import pull_hf

    progress = Progress()
    progress.note(f"{spec} is not in the store yet; pulling it now (once)")
    return inside(root, pull_hf(str(spec), models_dir=models_dir, progress=progress).path)


def auto_pull_enabled() -> bool:
    """Whether a missing default model is pulled on first use (CHATCLI_AUTO_PULL=0 turns it off)."""
    return os.environ.get("CHATCLI_AUTO_PULL", "1").lower() not in ("0", "false", "no", "off")
