"""OpenAI tool calling on the wire: tools and tool_choice in, message.tool_calls and streamed deltas out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

from chatcli.types import Chunk, Message, ToolCall, ToolCallDelta


class ToolsError(ValueError):
    """A bad tools request; protocol.py turns it into a 400 naming PARAM."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def bad(message: str, param: str) -> ToolsError:
    return ToolsError(message, param)


def parse_tools(body: dict) -> list[dict] | None:
    """The tools the model may call under tool_choice; None when none (tool_choice none, or no tools)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if body.get("parallel_tool_calls") is not None and not isinstance(body["parallel_tool_calls"], bool):
        raise bad("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
    if tools in (None, []):
        if choice not in (None, "none"):
            raise bad("'tool_choice' needs 'tools'", "tool_choice")
        return None
    if not isinstance(tools, list) or not all(
            isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str) for t in tools):
        raise bad("'tools' must be a list of {\"type\": \"function\", \"function\": {\"name\", ...}}", "tools")
    if choice in (None, "auto", "required"):  # required: enforced by the backend (see forced_choice)
        return tools
    if choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        named = [t for t in tools if t["function"]["name"] == name]
        if not named:
            raise bad(f"'tool_choice' names {name!r}, which is not in 'tools'", "tool_choice")
        return named
    raise bad("'tool_choice' must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\"}}",
              "tool_choice")


def forced_choice(body: dict) -> str:
    """ "required" when the request's tool_choice demands a call (required, or one named function), else "auto"."""
    choice = body.get("tool_choice")
    return "required" if body.get("tools") and (choice == "required" or isinstance(choice, dict)) else "auto"


def tool_message(m: dict, where: str, text: str) -> Message | None:
    """A "tool" message or an assistant message with tool_calls, or None when M is neither."""
    if m.get("role") == "tool":
        if not isinstance(m.get("tool_call_id"), str):
            raise bad(f"{where}.tool_call_id must be a string", f"{where}.tool_call_id")
        return Message("tool", text, tool_call_id=m["tool_call_id"])
    if m.get("role") == "assistant" and m.get("tool_calls"):
        if not isinstance(m["tool_calls"], list):
            raise bad(f"{where}.tool_calls must be a list of {{id, type, function: {{name, arguments}}}}",
                      f"{where}.tool_calls")
        calls = []
        for j, c in enumerate(m["tool_calls"]):
            f = c.get("function") if isinstance(c, dict) else None
            if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                raise bad(f"{where}.tool_calls[{j}] must be {{id, type, function: {{name, arguments}}}}", where)
            args = f.get("arguments", "{}")
            calls.append(ToolCall(str(c.get("id", f"call_{j}")), f["name"], args if isinstance(args, str) else json.dumps(args)))
        return Message("assistant", text, tool_calls=tuple(calls))
    return None


def message_calls(deltas: list[ToolCallDelta]) -> list[dict]:
    """Streamed deltas joined into OpenAI's message.tool_calls."""
    calls: dict[int, dict] = {}
    for d in deltas:
        c = calls.setdefault(d.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        c["id"] = d.id or c["id"]
        c["function"]["name"] = d.name or c["function"]["name"]
        c["function"]["arguments"] += d.arguments
    return [calls[i] for i in sorted(calls)]


def delta_calls(deltas: tuple[ToolCallDelta, ...]) -> list[dict]:
    """OpenAI's delta.tool_calls: id, type and name on a call's first piece, then only arguments."""
    out = []
    for d in deltas:
        f: dict = {"arguments": d.arguments}
        e: dict = {"index": d.index, "function": f}
        if d.id is not None:
            e.update(id=d.id, type="function")
        if d.name is not None:
            f["name"] = d.name
        out.append(e)
    return out


def first_call_only(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """CHUNKS with every tool call after the first dropped (parallel_tool_calls false)."""
    for chunk in chunks:
        if any(d.index > 0 for d in chunk.tool_calls):
            chunk = replace(chunk, tool_calls=tuple(d for d in chunk.tool_calls if d.index == 0))
        yield chunk
