"""A small stdio MCP server for the tool tests, written with the official SDK: get_weather(city) and fail()."""

import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("weather")


@app.tool()
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f'{{"city": "{city}", "temperature_c": 21, "sky": "sunny"}}'


@app.tool()
def fail(reason: str) -> str:
    """Always fails, for the error path."""
    raise ToolError(f"failed on purpose: {reason}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":  # streamable HTTP on the port given
        app.settings.port = int(sys.argv[2])
        app.run("streamable-http")
    else:
        app.run()
