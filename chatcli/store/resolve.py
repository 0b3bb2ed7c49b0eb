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
    """The folder for MODEL: a path to a model folder, or a name in the store."""
    model = model or settings.DEFAULT_MODEL
    if "\x00" in model:
        raise UsageError("invalid model name: it contains a NUL byte")
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
    if model == settings.DEFAULT_MODEL and auto_pull_enabled():
        # The default model works out of the box: a fresh store pulls it once, with progress on stderr.
        from chatcli.store.pull import ensure_model

        return inside(root, ensure_model(model, models_dir))
    raise LoadError(f"model {model!r} is not in the store ({root}); run `chatcli pull {model}` or pass a folder path")


def auto_pull_enabled() -> bool:
    """Whether a missing default model is pulled on first use (CHATCLI_AUTO_PULL=0 turns it off)."""
    return os.environ.get("CHATCLI_AUTO_PULL", "1").lower() not in ("0", "false", "no", "off")
