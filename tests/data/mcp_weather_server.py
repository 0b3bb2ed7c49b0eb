"""A small MCP server for the tool tests: get_weather(city). stdio by default; `--http PORT` serves streamable HTTP
on 127.0.0.1. Each call is appended to the file named by WEATHER_CALLS, so a test sees whether the tool ran;
WEATHER_DELAY makes each call take that many seconds."""

import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("weather", log_level="WARNING")  # INFO lines would land in the chat's terminal


@server.tool()
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    time.sleep(float(os.environ.get("WEATHER_DELAY", "0")))  # a slow tool, for Ctrl-C during a call
    log = os.environ.get("WEATHER_CALLS")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(city + "\n")
    return f"The weather in {city} is sunny and 21 degrees Celsius."


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
