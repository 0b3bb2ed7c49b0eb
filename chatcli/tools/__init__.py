"""Tools a chat can call: the registry, MCP servers, Python functions, and the confirm-run-continue loop."""
