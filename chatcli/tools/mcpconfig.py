"""Which MCP servers a chat starts: `[mcp.servers.NAME]` in config.toml and the common mcp.json shape.

A server is a stdio command (`command`, `args`, `env`) or a streamable HTTP endpoint (`url`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from chatcli.errors import UsageError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_JSON = 1 << 20


@dataclass(frozen=True)
class ServerSpec:
    """One MCP server to start (command) or reach (url)."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    where: str = ""  # the file it came from, for messages


def _spec(name: str, entry: object, where: str) -> ServerSpec:
    if not NAME.match(name):
        raise UsageError(f"{where}: MCP server name {name!r} must be letters, digits, - or _ (at most 64)")
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: MCP server {name!r} must be a table with command or url")
    url, command = entry.get("url"), entry.get("command")
    if (url is None) == (command is None):
        raise UsageError(f"{where}: MCP server {name!r} needs exactly one of command (stdio) or url (streamable HTTP)")
    args, env = entry.get("args", []), entry.get("env", {})
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise UsageError(f"{where}: MCP server {name!r}: args must be a list of strings")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise UsageError(f"{where}: MCP server {name!r}: env must map names to strings")
    for key, value in (("url", url), ("command", command)):
        if value is not None and not (isinstance(value, str) and value):
            raise UsageError(f"{where}: MCP server {name!r}: {key} must be a non-empty string")
    if url is not None and not url.startswith(("http://", "https://")):
        raise UsageError(f"{where}: MCP server {name!r}: url must start with http:// or https://, got {url!r}")
    return ServerSpec(name, command, tuple(args), dict(env), url, where)


def read_mcp_json(path: Path) -> list[ServerSpec]:
    """The servers of an mcp.json file (`{"mcpServers": {NAME: {...}}}`, as Claude Desktop and editors write it)."""
    try:
        if path.stat().st_size > MAX_JSON:
            raise UsageError(f"{path}: larger than {MAX_JSON} bytes; is it an mcp.json?")
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise UsageError(f'{path}: expected {{"mcpServers": {{NAME: {{...}}}}}}')
    return [_spec(n, e, str(path)) for n, e in servers.items()]


def servers(raw: dict, config_file: Path) -> list[ServerSpec]:
    """Every configured MCP server: [mcp.servers.*], then each file in [mcp] json (a path or a list of them,
    relative to the config file), then mcp.json beside the config file when it exists."""
    section = raw.get("mcp", {})
    if not isinstance(section, dict):
        raise UsageError(f"{config_file}: [mcp] must be a table")
    out = [_spec(n, e, str(config_file)) for n, e in (section.get("servers") or {}).items()]
    files = section.get("json", [])
    files = [files] if isinstance(files, str) else files
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise UsageError(f"{config_file}: [mcp] json must be a path or a list of paths")
    paths = [config_file.parent / Path(f).expanduser() for f in files]
    beside = config_file.parent / "mcp.json"
    if beside.is_file() and beside not in paths:
        paths.append(beside)
    for p in paths:
        out += read_mcp_json(p)
    seen: set[str] = set()
    for s in out:
        if s.name in seen:
            raise UsageError(f"{s.where}: MCP server {s.name!r} is configured twice")
        seen.add(s.name)
    return out
