"""Bounds on what an OpenAI-compatible server may send: an httpx transport that caps lines, events and bodies.

The SDK buffers an SSE line until its newline and a JSON body until its end, so a hostile or broken server could
grow the client without limit; the caps turn that into a one-line error instead.
"""

from __future__ import annotations

import httpx

from chatcli.errors import BackendError

LINE_CAP = 1 << 20  # no real chunk event comes near this; llama.cpp's largest are a few KiB
EVENT_CAP = 4 << 20
BODY_CAP = 16 << 20  # a /models listing or an error body, never a reply (replies stream)


class ServerMisbehaved(BackendError):
    """The server broke the protocol in a way no retry fixes; the message is the whole user-facing line.

    A BackendError, so that wherever the SDK lets it through unwrapped it still ends as exit 4 in one line.
    """


def misbehaved(e: BaseException | None) -> ServerMisbehaved | None:
    """The ServerMisbehaved somewhere in E's cause chain (the SDK wraps transport errors in its own)."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, ServerMisbehaved):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


class _CappedStream(httpx.SyncByteStream):
    def __init__(self, inner, where: str, streaming: bool):
        self._inner = inner
        self._where = where
        self._streaming = streaming

    def __iter__(self):
        line = event = total = 0
        tail = b""
        for chunk in self._inner:
            total += len(chunk)
            if not self._streaming:
                if total > BODY_CAP:
                    raise ServerMisbehaved(f"{self._where} sent an answer over {_size(BODY_CAP)}; "
                                           f"is --base-url an OpenAI-compatible /v1 endpoint?")
                yield chunk
                continue
            nl = chunk.rfind(b"\n")
            line = len(chunk) - nl - 1 if nl >= 0 else line + len(chunk)
            joined = tail + chunk
            blank = max(joined.rfind(b"\n\n"), joined.rfind(b"\n\r\n"))
            event = len(joined) - blank - 2 if blank >= 0 else event + len(chunk)
            tail = joined[-2:]
            if line > LINE_CAP:
                raise ServerMisbehaved(f"{self._where} sent a server-sent-events line over {_size(LINE_CAP)} "
                                       f"without a newline; is --base-url an OpenAI-compatible /v1 endpoint?")
            if event > EVENT_CAP:
                raise ServerMisbehaved(f"{self._where} sent a server-sent event over {_size(EVENT_CAP)}; "
                                       f"is --base-url an OpenAI-compatible /v1 endpoint?")
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class CappedTransport(httpx.HTTPTransport):
    """HTTPTransport whose responses are refused when HTML and cut when a line, an event or a body is too big."""

    def __init__(self, where: str, **kwargs):
        super().__init__(**kwargs)
        self._where = where

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in ("text/html", "application/xhtml+xml"):
            response.close()
            # a proxy's login page, a web server's 404, or a base URL missing /v1: never the API itself
            raise ServerMisbehaved(f"{self._where} answered an HTML page, not the OpenAI API; check --base-url")
        # only a request that asked for a stream may get an unbounded body; an SSE answer to GET /models may not
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed upload: never one of ours that asks for a stream
            body = b""
        asked = request.method == "POST" and b'"stream":true' in body.replace(b" ", b"")
        response.stream = _CappedStream(response.stream, self._where, kind == "text/event-stream" and asked)
        return response
