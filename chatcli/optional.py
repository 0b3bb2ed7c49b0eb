"""Optional dependencies: imported only by the command that needs them, and missing ones named in one line."""

from __future__ import annotations

import importlib
from types import ModuleType

from chatcli.errors import ChatcliError


class MissingDependency(ChatcliError):
    """A feature needs a package that is not installed (exit 1): the message names the package and the extra."""


def require(module: str, feature: str, extra: str) -> ModuleType:
    """Import MODULE for FEATURE, or say which extra of chatcli installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name is None or e.name.split(".")[0] != top:  # the package is there but broken inside: a real bug
            raise
        raise MissingDependency(
            f"{feature} needs {top}, which is not installed; install it with "
            f"`pip install 'chatcli[{extra}]'` (in a checkout: `.venv/bin/pip install {top}`)"
        ) from None
