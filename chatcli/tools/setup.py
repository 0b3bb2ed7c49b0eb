"""The tools of a chat or an ask, from the config file and the flags."""

from __future__ import annotations

from chatcli.errors import BackendError, UsageError
from chatcli.tools.registry import Registry


def open_tools(settings, *, names: list[str] | None, all_tools: bool, chat: bool, warn) -> Registry | None:
    """The registry, or None when no tool is wanted (nothing configured, no -T/--tools): the prompt stays as it was.

    In a chat the MCP servers' tools are on and the Python tools off until `/tools on NAME` or -T; in ask only the
    tools named with -T (or all with --tools) are on, and MCP servers start only then.
    """
    from chatcli import settings as paths
    from chatcli.tools.mcpconfig import servers
    from chatcli.tools.pytools import python_tools

    specs = servers(settings.raw, paths.config_path())
    wanted = set(names or ())
    if not chat and not all_tools:  # ask starts only the servers whose tools it names (SERVER_TOOL)
        specs = [sp for sp in specs if any(n.startswith(f"{sp.name}_") for n in wanted)]
    if not (specs and chat) and not wanted and not all_tools:
        return None
    reg = Registry()
    tools, warnings = python_tools()
    for w in warnings:
        warn(w)
    for t in tools:
        reg.add(t, on=all_tools or t.name in wanted)
    if specs:
        from chatcli.tools.mcpclient import McpHub

        hub = McpHub()
        reg.closers.append(hub.close)
        for spec in specs:
            try:  # one server down leaves the others (and the chat) working
                found = hub.start(spec)
            except BackendError as e:
                warn(f"warning: {e}; its tools are not available")
                continue
            except BaseException:
                reg.close()
                raise
            for t in found:
                reg.add(t, on=chat or all_tools or t.name in wanted)
    unknown = wanted - set(reg.tools)
    if unknown:
        reg.close()
        raise UsageError(f"-T {sorted(unknown)[0]}: no such tool; known: {', '.join(reg.tools)}")
    return reg
