"""A raw-socket HTTP server whose every answer is scripted by the test: stalls, malformed SSE, 500s, 429s.

A real server (uvicorn) cannot be made to misbehave on cue, so the openai backend's fault tests talk to this one.
"""

from __future__ import annotations

import json
import socket
import threading
import time


def read_request(conn: socket.socket) -> tuple[str, bytes]:
    """The request line and body of one HTTP/1.1 request."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = conn.recv(65536)
        if not part:
            return "", b""
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        part = conn.recv(65536)
        if not part:
            break
        body += part
    return head.split(b"\r\n")[0].decode(), body


def respond(conn: socket.socket, status: int, body: dict | str, headers: dict | None = None) -> None:
    """A whole JSON (or text) response, then close."""
    raw = (json.dumps(body) if isinstance(body, dict) else body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
                 f"Connection: close\r\n{extra}\r\n".encode() + raw)


def start_sse(conn: socket.socket) -> None:
    """Headers of an event stream without a length: the body ends when the connection closes."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")


def delta(text: str | None = None, finish: str | None = None) -> bytes:
    """One chat.completion.chunk event."""
    d = {"content": text} if text is not None else {}
    event = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}
    return f"data: {json.dumps(event)}\n\n".encode()


class FaultServer:
    """Accepts connections on 127.0.0.1 and hands each to HANDLER(conn, index, request_line, body)."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.requests.append("")
            threading.Thread(target=self._one, args=(conn, len(self.requests) - 1), daemon=True).start()

    def _one(self, conn: socket.socket, index: int) -> None:
        with conn:
            try:
                line, body = read_request(conn)
                self.requests[index] = line
                self.handler(conn, index, line, body)
            except OSError:
                pass  # the client gave up (a timeout test)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def stall(seconds: float) -> None:
    """Hold the connection open without sending anything."""
    time.sleep(seconds)
