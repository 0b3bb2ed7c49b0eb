"""The names users give models, prompts and conversations: the allow-list pattern, and paths that must stay inside
their root. A module of its own because the store, prompts and history all use the rules, and none of them should
import the others (resolve_model, which may pull, least of all)."""

from __future__ import annotations

import re
from pathlib import Path

from chatcli.errors import UsageError

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
