"""Turn a --model value (a store name or a folder path) into a model folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from chatcli import settings
from chatcli.errors import LoadError, UsageError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(name: str, what: str = "model") -> str:
    """Allow-list a store name: letters, digits, '.', '_' and '-', no path separators, NUL or '..'."""
    if not NAME_RE.match(name or "") or ".." in name:
        raise UsageError(f"invalid {what} name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def inside(root: Path, path: Path) -> Path:
    """PATH resolved, and required to stay inside ROOT (symlinks that escape are refused)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise UsageError(f"{path} resolves outside {root}; refusing it")
    return resolved


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
