"""The tools of one chat: what each is, whether it is on, and which ones the user said "always" to."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from chatcli.errors import UsageError

DEFAULT_RESULT_BUDGET = 8000  # characters of one result the model sees; a small model's context is a few thousand tokens
DEFAULT_ROUNDS = 8


class ToolError(Exception):
    """A tool failed; its message goes back to the model as the result."""


@dataclass
class Tool:
    """One callable tool. RUN takes the parsed arguments and a cancel event and returns the result as text."""

    name: str
    description: str
    parameters: dict
    run: Callable[[dict, threading.Event], str]
    source: str = "python"  # "python" or "mcp SERVER"

    def schema(self) -> dict:
        """The OpenAI-style function entry the chat template renders."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass
class Registry:
    """The tools of a chat, in the order they were added; some on, some off."""

    tools: dict[str, Tool] = field(default_factory=dict)
    enabled: set[str] = field(default_factory=set)
    always: set[str] = field(default_factory=set)  # answered "a": run without asking for the rest of this chat
    rounds: int = DEFAULT_ROUNDS
    budget: int = DEFAULT_RESULT_BUDGET
    closers: list[Callable[[], None]] = field(default_factory=list)

    def add(self, tool: Tool, on: bool = True) -> None:
        """Register TOOL (a later tool of the same name replaces the earlier one)."""
        self.tools[tool.name] = tool
        if on:
            self.enabled.add(tool.name)

    def get(self, name: str) -> Tool:
        """The tool called NAME; UsageError lists the known names."""
        try:
            return self.tools[name]
        except KeyError:
            raise UsageError(f"no tool {name!r}; /tools lists them ({', '.join(self.tools) or 'none configured'})") from None

    def toggle(self, name: str, on: bool) -> None:
        """/tools on|off NAME ("all" for every tool)."""
        names = list(self.tools) if name == "all" else [self.get(name).name]
        if on:
            self.enabled.update(names)
        else:
            self.enabled.difference_update(names)

    def active(self) -> list[Tool]:
        """The tools the model is offered now."""
        return [t for n, t in self.tools.items() if n in self.enabled]

    def schemas(self) -> list[dict] | None:
        """What the backend gets as tools=; None when none is on, so the prompt is as without tools."""
        return [t.schema() for t in self.active()] or None

    def close(self) -> None:
        """Stop the MCP servers."""
        for close in self.closers:
            close()
        self.closers.clear()
