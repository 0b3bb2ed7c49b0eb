"""The tools of one chat: each has a name, a description, a JSON Schema for its arguments and a call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ToolError(Exception):
    """A tool failed; its message goes back to the model as the call's result."""


@dataclass
class Tool:
    name: str
    description: str
    schema: dict[str, Any]
    call: Callable[[dict[str, Any]], str]
    source: str = "python"  # where it came from, for /tools: "python" or "mcp:SERVER"

    def spec(self) -> dict[str, Any]:
        """The OpenAI function-tool shape templates and servers take."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.schema}}


@dataclass
class Registry:
    """Tools by name, each on or off; closers run on close (MCP connections)."""

    tools: dict[str, Tool] = field(default_factory=dict)
    off: set[str] = field(default_factory=set)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def add(self, tool: Tool) -> None:
        self.tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name) if name not in self.off else None

    def enabled(self) -> list[Tool]:
        return [t for n, t in self.tools.items() if n not in self.off]

    def specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self.enabled()]

    def toggle(self, name: str, on: bool) -> bool:
        """Turn NAME on or off; False when there is no such tool."""
        if name not in self.tools:
            return False
        (self.off.discard if on else self.off.add)(name)
        return True

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - a server that dies on the way out must not hide the chat's own exit
                pass
        self.closers.clear()
