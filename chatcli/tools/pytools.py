"""Python functions as tools: the JSON Schema comes from the typed signature, the description from the docstring.

Third-party packages register functions in the entry-point group "chatcli.tools"; two built-ins come with chatcli.
"""

from __future__ import annotations

import datetime
import inspect
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from chatcli.tools.registry import Tool, ToolError

GROUP = "chatcli.tools"
MAX_FILE = 1 << 20  # read_file reads at most this much; the result budget cuts it further


def schema_of(fn: Callable) -> dict:
    """The JSON Schema of FN's parameters, from its annotations (pydantic does the type mapping)."""
    from pydantic import create_model

    fields = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = str if p.annotation is inspect.Parameter.empty else p.annotation
        fields[name] = (annotation, ... if p.default is inspect.Parameter.empty else p.default)
    schema = create_model(f"{fn.__name__}_args", **fields).model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


def from_function(fn: Callable, name: str | None = None) -> Tool:
    """FN as a Tool; its arguments are checked against the signature before it runs."""
    from pydantic import ValidationError, validate_call

    checked = validate_call(fn)

    def run(args: dict, cancel: threading.Event) -> str:
        try:
            out = checked(**args)
        except ValidationError as e:
            raise ToolError(f"bad arguments: {e.errors(include_url=False)}") from None
        return out if isinstance(out, str) else repr(out)

    doc = inspect.getdoc(fn) or ""
    return Tool(name or fn.__name__, doc.split("\n\n")[0].strip(), schema_of(fn), run)


def read_file(path: str) -> str:
    """Read a text file under the current working directory (a relative path)."""
    root = Path.cwd().resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise ToolError(f"{path}: outside the working directory {root}; only files under it can be read")
    if not target.is_file():
        raise ToolError(f"{path}: no such file")
    with open(target, "rb") as f:
        data = f.read(MAX_FILE)
    return data.decode("utf-8", "replace")


def now() -> str:
    """The current local date and time, ISO 8601 with the UTC offset."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


BUILTINS = (read_file, now)


def python_tools() -> tuple[list[Tool], list[str]]:
    """The built-ins and the entry points' functions; (tools, one warning line per entry point that failed)."""
    tools = [from_function(fn) for fn in BUILTINS]
    warnings = []
    for ep in entry_points(group=GROUP):
        try:
            tools.append(from_function(ep.load(), ep.name))
        except Exception as e:  # a broken plugin must not stop the chat
            warnings.append(f"tool plugin {ep.name!r} ({ep.value}) failed to load: {e}")
    return tools, warnings
