"""MCP servers as tools, through the official `mcp` SDK: stdio commands and streamable HTTP URLs.

The SDK is async and its clients must be entered and left in one task, while the chat is synchronous: one event
loop runs in a daemon thread, each server lives in its own task there, and calls reach it through a queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatcli.errors import UsageError
from chatcli.tools.registry import Registry, Tool, ToolError

CONNECT_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 120.0


@dataclass
class ServerSpec:
    """One configured MCP server: a stdio COMMAND with ARGS and ENV, or a streamable HTTP URL."""

    name: str
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None


def _spec(name: str, table: Any, where: str) -> ServerSpec:
    if not isinstance(table, dict):
        raise UsageError(f"{where}: mcp server {name!r} must be a table")
    command, url = table.get("command"), table.get("url")
    if (command is None) == (url is None):
        raise UsageError(f"{where}: mcp server {name!r} needs either command or url")
    args, env = table.get("args", []), table.get("env", {})
    if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        raise UsageError(f"{where}: mcp server {name!r}: args must be a list of strings")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise UsageError(f"{where}: mcp server {name!r}: env must be a table of strings")
    return ServerSpec(name, command=command, args=list(args), env=dict(env), url=url)


def specs_from_config(raw: dict[str, Any], where: str = "config") -> list[ServerSpec]:
    """The [mcp.servers.NAME] tables of a config file, plus the servers of the mcp.json its [mcp] `config` names."""
    section = raw.get("mcp", {})
    if not isinstance(section, dict):
        return []
    servers = section.get("servers", {})
    out = [_spec(n, t, where) for n, t in servers.items()] if isinstance(servers, dict) else []
    if isinstance(section.get("config"), str):
        out += specs_from_mcp_json(Path(os.path.expanduser(section["config"])))
    return out


def specs_from_mcp_json(path: Path) -> list[ServerSpec]:
    """Servers of the `{"mcpServers": {NAME: {command, args, env} | {url}}}` file other MCP clients share."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise UsageError(f"{path}: not valid JSON ({e})") from None
    servers = data.get("mcpServers", {}) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise UsageError(f"{path}: mcpServers must be an object")
    return [_spec(n, t, str(path)) for n, t in servers.items()]


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    with _LOCK:
        if _LOOP is None:
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="mcp", daemon=True).start()
        return _LOOP


_LOOP: asyncio.AbstractEventLoop | None = None
_LOCK = threading.Lock()


def _result_text(result: Any) -> tuple[str, bool]:
    parts = []
    for block in result.content:
        text = getattr(block, "text", None)
        parts.append(text if text is not None else f"[{getattr(block, 'type', 'content')} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    return "\n".join(parts), bool(getattr(result, "is_error", False))


class Connection:
    """A running MCP server: its tools, and calls into it from any thread."""

    def __init__(self, spec: ServerSpec):
        self.spec = spec
        self.loop = _loop()
        self.ready: Future = Future()
        self.queue: asyncio.Queue | None = None
        self.log: Any = None
        self.task = asyncio.run_coroutine_threadsafe(self._serve(), self.loop)
        try:
            self.tools = self.ready.result(CONNECT_TIMEOUT_S)
        except TimeoutError:
            self.close()
            raise UsageError(f"mcp server {spec.name}: no answer in {CONNECT_TIMEOUT_S:.0f} s") from None

    async def _serve(self) -> None:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client

        spec = self.spec
        try:
            if spec.url:
                target: Any = spec.url
            else:
                # a server's own logging (tracebacks of failed tools included) would scribble over the chat
                self.log = _log_file(spec.name)
                params = StdioServerParameters(command=spec.command, args=spec.args, env=spec.env or None)
                target = stdio_client(params, errlog=self.log)
            async with Client(target, read_timeout_seconds=CALL_TIMEOUT_S) as client:
                listed = await client.list_tools()
                self.queue = asyncio.Queue()
                self.ready.set_result(list(listed.tools))
                while (job := await self.queue.get()) is not None:
                    name, args, done = job
                    try:
                        done.set_result(_result_text(await client.call_tool(name, args)))
                    except Exception as e:  # noqa: BLE001 - a failed call is the model's to hear about
                        done.set_exception(ToolError(str(e) or type(e).__name__))
        except BaseException as e:  # noqa: BLE001 - reported to whoever waits: the chat, not this thread
            if not self.ready.done():
                self.ready.set_exception(UsageError(f"mcp server {spec.name}: cannot start ({_why(e)})"))

    def call(self, name: str, args: dict[str, Any]) -> str:
        if self.queue is None or self.task.done():
            raise ToolError(f"mcp server {self.spec.name} is not running")
        done: Future = Future()
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (name, args, done))
        text, is_error = done.result(CALL_TIMEOUT_S + 5)
        if is_error:
            raise ToolError(text)
        return text

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.queue is not None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, None)
        try:
            self.task.result(10)
        except Exception:  # noqa: BLE001 - closing: a server that will not stop is left to the daemon thread
            self.task.cancel()


def _log_file(name: str) -> Any:
    from chatcli.settings import cache_dir

    folder = cache_dir() / "mcp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return open(folder / f"{name}.log", "a", encoding="utf-8")  # noqa: SIM115 - open while the server runs
    except OSError:
        return open(os.devnull, "w")  # noqa: SIM115


def _why(e: BaseException) -> str:
    # anyio wraps failures in exception groups; the first leaf says what went wrong
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return str(e) or type(e).__name__


def connect(spec: ServerSpec, registry: Registry) -> list[Tool]:
    """Start SPEC, add its tools to REGISTRY as SERVER_TOOL and return them."""
    conn = Connection(spec)
    registry.closers.append(conn.close)
    added = []
    for t in conn.tools:
        def call(args: dict[str, Any], _name: str = t.name) -> str:
            return conn.call(_name, args)

        tool = Tool(f"{spec.name}_{t.name}", t.description or "", dict(t.input_schema or {"type": "object"}),
                    call, source=f"mcp:{spec.name}")
        registry.add(tool)
        added.append(tool)
    return added
