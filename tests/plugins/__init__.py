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


class ServeProcess:
    """`chatcli serve ARGS --port 0` in a subprocess; .url once it listens, .log the stderr lines so far."""

    def __init__(self, *args: str, env: dict | None = None, timeout: float = 180):
        import re
        import threading
        import time

        cmd = [str(CHATCLI)] if CHATCLI.exists() else [sys.executable, "-m", "chatcli"]
        self.proc = subprocess.Popen(cmd + ["serve", "--port", "0", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.log: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read() -> None:  # keep draining, or a full pipe would block the server's access log
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                found = re.search(r"at (http://\S+/v1)", line)
                if found and self.url is None:
                    self.url = found.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("chatcli serve did not start: " + "\n".join(self.log))
        if self.url is None:
            self.stop()
            raise RuntimeError(f"chatcli serve exited {self.proc.returncode}: " + "\n".join(self.log))

    def stop(self) -> int:
        """Ctrl-C, as a user would; the exit code."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
