"""MCP servers through the official SDK, driven from the synchronous chat.

The SDK is async: one event loop runs in a daemon thread and holds every server's session open; each server's
session lives in one task (its cancel scopes must be entered and left there). A call is a future the chat waits on,
so Ctrl-C can cancel it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import threading
import time

from chatcli.errors import BackendError
from chatcli.tools.mcpconfig import ServerSpec
from chatcli.tools.registry import Tool, ToolError

START_TIMEOUT = 30.0
CALL_TIMEOUT = 300.0
_BAD_NAME = re.compile(r"[^A-Za-z0-9_-]")


def _text(result) -> str:
    """A CallToolResult as the text the model reads: text blocks joined, other blocks (images) named."""
    parts = []
    for block in result.content:
        kind = getattr(block, "type", "")
        parts.append(block.text if kind == "text" else f"[{kind} content not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def tool_name(server: str, remote: str) -> str:
    """SERVER_TOOL in the characters and length function names may have in the OpenAI API (a server's names may not)."""
    return _BAD_NAME.sub("_", f"{server}_{remote}")[:64]


class McpHub:
    """The running MCP servers of one chat."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mcp", daemon=True)
        self.thread.start()
        self.stop: asyncio.Event | None = None
        self.keepers: list[concurrent.futures.Future] = []

    def start(self, spec: ServerSpec) -> list[Tool]:
        """Start (or reach) SPEC's server and list its tools, named SERVER_TOOL; BackendError names the server."""
        ready: concurrent.futures.Future = concurrent.futures.Future()
        keeper = asyncio.run_coroutine_threadsafe(self._keep(spec, ready), self.loop)
        self.keepers.append(keeper)
        try:
            client, listed = ready.result(timeout=START_TIMEOUT)
        except concurrent.futures.TimeoutError:
            keeper.cancel()
            raise BackendError(f"MCP server {spec.name!r} did not answer within {START_TIMEOUT:g} s") from None
        except Exception as e:
            raise BackendError(f"MCP server {spec.name!r} ({spec.url or spec.command}) failed to start: "
                               f"{_reason(e)}") from None
        return [self._tool(spec, client, t) for t in listed]

    async def _keep(self, spec: ServerSpec, ready: concurrent.futures.Future) -> None:
        from mcp import Client, StdioServerParameters, stdio_client

        if self.stop is None:
            self.stop = asyncio.Event()
        log = None
        if spec.url:
            target = spec.url
        else:  # the config's env adds to the user's own (a server finds its tools on PATH, as in a shell)
            params = StdioServerParameters(command=spec.command, args=list(spec.args), env={**os.environ, **spec.env})
            # A server's own logging (tracebacks of failed tools included) would scribble over the chat.
            log = _log_file(spec.name)
            target = stdio_client(params, errlog=log)
        try:
            async with Client(target) as client:
                listed = (await client.list_tools()).tools
                ready.set_result((client, listed))
                await self.stop.wait()
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e)
            if not isinstance(e, Exception):
                raise
        finally:
            if log is not None:
                log.close()

    def _tool(self, spec: ServerSpec, client, listed) -> Tool:
        remote = listed.name

        def run(args: dict, cancel: threading.Event) -> str:
            future = asyncio.run_coroutine_threadsafe(client.call_tool(remote, args), self.loop)
            deadline = time.monotonic() + CALL_TIMEOUT
            try:
                while True:  # short waits: Ctrl-C reaches the main thread between them
                    try:
                        result = future.result(timeout=0.1)
                        break
                    except concurrent.futures.TimeoutError:
                        if cancel.is_set():
                            raise KeyboardInterrupt from None
                        if time.monotonic() > deadline:
                            raise ToolError(f"no answer from MCP server {spec.name!r} in {CALL_TIMEOUT:g} s") from None
            except BaseException:
                future.cancel()
                raise
            text = _text(result)
            if result.is_error:
                raise ToolError(text or "the tool reported an error")
            return text

        return Tool(tool_name(spec.name, remote), listed.description or "", listed.input_schema or {"type": "object"}, run,
                    source=f"mcp {spec.name}")

    def close(self) -> None:
        """Leave every session (stdio servers are stopped) and end the loop."""
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        for keeper in self.keepers:
            try:
                keeper.result(timeout=5)
            except BaseException:  # a server that will not close cleanly is not the user's problem at exit
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def _log_file(name: str):
    """cache/mcp/NAME.log, where a stdio server's stderr goes; /dev/null when the cache is not writable."""
    from chatcli.settings import cache_dir

    folder = cache_dir() / "mcp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return open(folder / f"{name}.log", "a", encoding="utf-8")  # noqa: SIM115 - open while the server runs
    except OSError:
        return open(os.devnull, "w")  # noqa: SIM115


def _reason(e: BaseException) -> str:
    """One line for an SDK failure (anyio wraps them in exception groups)."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
