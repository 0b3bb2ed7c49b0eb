"""Run the app with uvicorn: in the foreground for `chatcli serve`, or in a thread for tests and benchmarks."""

from __future__ import annotations

import logging
import socket
import sys
import threading

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from chatcli.errors import UsageError
from chatcli.server.app import build_app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a UsageError naming the address and the fix (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OverflowError:
        sock.close()
        raise UsageError(f"--port must be in 0..65535, got {port}") from None
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _log_to_stderr() -> None:
    log = logging.getLogger("chatcli.server")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


HEADER_TIMEOUT = 10.0  # seconds a new connection has to send its request line and headers
KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open
MAX_CONNECTIONS = 64  # open connections and tasks at once; more get 503 from uvicorn


class _HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head within HEADER_TIMEOUT:
    uvicorn times out idle kept-alive connections but not a new one that never speaks (half-open sockets pile up)."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT, self._no_head)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None:
            self._head_timer.cancel()

    def connection_lost(self, exc) -> None:
        self._head_timer.cancel()
        super().connection_lost(exc)

    def _no_head(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()


def _server(app, log_level: str) -> uvicorn.Server:
    # uvicorn's own access log is off: ours has tokens and timings on the same line.
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=3, lifespan="on",
                            http=_HeaderTimeoutH11, timeout_keep_alive=KEEP_ALIVE, limit_concurrency=MAX_CONNECTIONS)
    return uvicorn.Server(config)


def serve(backend, model_id: str, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_queue: int = 16, on_ready=None, sock: socket.socket | None = None, aliases: tuple[str, ...] = (),
          parallel: int = 1) -> None:
    """Serve until Ctrl-C or SIGTERM on SOCK (else a new one on HOST:PORT); ON_READY(url) once it listens."""
    sock = sock or bind(host, port)
    _log_to_stderr()
    app = build_app(backend, model_id, api_key=api_key, max_queue=max_queue, aliases=aliases, parallel=parallel)
    if on_ready is not None:
        name = f"[{host}]" if ":" in host else host
        on_ready(f"http://{name}:{sock.getsockname()[1]}/v1")
    try:
        _server(app, "warning").run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown; it is how a server stops
        pass


class ServerThread:
    """The server in a background thread on 127.0.0.1 and a free port; a context manager (tests, bench)."""

    def __init__(self, backend, model_id: str = "model", *, api_key: str | None = None, max_queue: int = 16,
                 aliases: tuple[str, ...] = (), parallel: int = 1):
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = build_app(backend, model_id, api_key=api_key, max_queue=max_queue, aliases=aliases, parallel=parallel)
        self.server = _server(self.app, "warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread died while starting")
            self.thread.join(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
