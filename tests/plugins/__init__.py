"""Test helpers for the backend and server tests: a tiny plugin package and a raw-socket HTTP fault server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).parent / "chatcli_echo_plugin"
CHATCLI = Path(sys.executable).parent / "chatcli"


def echo_backend(**kwargs):
    """The echo plugin's backend, imported from its source folder (the plugin test installs it for real)."""
    if str(PLUGIN_DIR) not in sys.path:
        sys.path.insert(0, str(PLUGIN_DIR))
    from chatcli_echo import EchoBackend

    backend = EchoBackend(**kwargs)
    backend.load("echo-1")
    return backend


def run_cli(*args: str, input: str | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real console script in a subprocess (the test's CHATCLI_HOME and config are inherited)."""
    cmd = [str(CHATCLI)] if CHATCLI.exists() else [sys.executable, "-m", "chatcli"]
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(cmd + list(args), input=input, capture_output=True, text=True, env=full_env, timeout=timeout)
