"""Find backends through the `chatcli.backends` entry-point group; built-ins register the same way as plugins."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import entry_points

from chatcli.errors import UsageError, BackendError

GROUP = "chatcli.backends"


@dataclass(frozen=True)
class BackendInfo:
    """One registered backend and the distribution it came from."""

    name: str
    target: str  # "module:attr"
    dist: str


def available() -> dict[str, BackendInfo]:
    """All backends registered in the environment, by name."""
    found: dict[str, BackendInfo] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if getattr(ep, "dist", None) is not None else "?"
        found.setdefault(ep.name, BackendInfo(ep.name, ep.value, dist))
    return found


def backend_class(name: str):
    """The backend class registered under NAME, or a UsageError suggesting the closest name."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as e:  # a broken plugin must not take the CLI down with a traceback
                raise BackendError(f"backend {name!r} ({ep.value}) failed to import: {e}") from e
    names = sorted(available())
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"unknown backend {name!r}{hint} (available: {', '.join(names) or 'none'}; see `chatcli backends`)")
