"""Tools a chat can call: a registry (name, description, JSON Schema, call), MCP servers through the official SDK,
and the loop that runs a model's calls and feeds the results back."""

from chatcli.tools.registry import Registry, Tool, ToolError

__all__ = ["Registry", "Tool", "ToolError"]
