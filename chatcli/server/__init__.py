"""An OpenAI-compatible HTTP server over any Backend (`chatcli serve`)."""

from chatcli.server.app import build_app
from chatcli.server.run import ServerThread, serve

__all__ = ["build_app", "serve", "ServerThread"]
