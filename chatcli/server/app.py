"""The FastAPI app: OpenAI-compatible routes over any Backend, behind one fair queue."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from chatcli.errors import ChatcliError, UsageError
from chatcli.server import protocol as wire
from chatcli.server.metrics import Metrics
from chatcli.server.openapi import ChatCompletion, Completion, body_of, openapi, replies
from chatcli.server.protocol import ApiError, GenRequest
from chatcli.server.queue import EngineQueue, QueueFull
from chatcli.server.schema import ChatCompletionRequest, CompletionRequest, TokenizeRequest
from chatcli.server.tools import delta_calls, first_call_only, message_calls
from chatcli.types import Chunk, Stats

MAX_BODY = 1 << 20  # 1 MiB
BODY_TIMEOUT = 30.0  # seconds to send the whole body once the headers are in
log = logging.getLogger("chatcli.server")


def _status_of(e: BaseException) -> ApiError:
    """A backend failure as an HTTP error: bad parameters are the client's (400), the rest are ours."""
    from starlette.requests import ClientDisconnect

    from chatcli.templates import TemplateRaised

    if isinstance(e, ApiError):
        return e
    if isinstance(e, ClientDisconnect):  # nginx's 499: the client left before the answer, not a server fault
        return ApiError(499, "the client disconnected before the request was read", code="client_disconnected")
    if isinstance(e.__context__, TemplateRaised) or isinstance(e, TemplateRaised):
        # the model's template refused these messages (say, roles that do not alternate): the client's to fix
        return ApiError(400, str(e), param="messages")
    if isinstance(e, UsageError) or getattr(e, "exit_code", None) == 2:
        return ApiError(400, str(e))
    if isinstance(e, ChatcliError) and e.exit_code == 4:
        return ApiError(502, str(e), kind="upstream_error")
    return ApiError(500, f"generation failed: {type(e).__name__}: {e}")


def _logging_notices(chunks: Iterator[Chunk], told: set) -> Iterator[Chunk]:
    """CHUNKS, with the backend's notices (the compiled step took over, a build failed) in the server's log, each
    once in TOLD's lifetime (a template's folded system prompt would repeat on every request): they are for whoever
    runs the server, not for the client."""
    for chunk in chunks:
        for notice in chunk.notices:
            if notice not in told:
                told.add(notice)
                log.info(f"chatcli serve: {notice.text}")
        yield chunk


async def _body(request: Request) -> dict:
    """Read at most 1 MiB; a larger body is refused with 413 before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, f"request body is {int(declared)} bytes; the limit is {MAX_BODY} (1 MiB)", code="body_too_large")
    raw = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for part in request.stream():
                raw += part
                if len(raw) > MAX_BODY:
                    raise ApiError(413, f"request body is over the {MAX_BODY}-byte (1 MiB) limit", code="body_too_large")
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT:g}s", code="body_timeout") from None
    return wire.parse_json(bytes(raw))


class _Record:
    """What the access log line and /metrics report about one request."""

    def __init__(self, path: str, metrics: Metrics):
        self.path, self.t0, self.metrics = path, time.perf_counter(), metrics
        self.status, self.first, self.last, self.stats, self.note = 200, None, None, None, ""
        self.seen: Chunk | None = None  # the last chunk timed: a streamed reply's first one passes twice
        self.done = False  # the stream reached [DONE] (or an error event)

    def piece(self, chunk: Chunk) -> None:
        """CHUNK of the reply (text or reasoning) arrived: the first token's time, then the gaps between pieces."""
        if chunk is self.seen:
            return
        self.seen, now = chunk, time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.metrics.gap.observe(now - self.last)
        self.last = now

    def log(self) -> None:
        """The access log line, and the request counted in /metrics."""
        log.info(self.line())
        self.metrics.request_done(self.path, self.status, self.first - self.t0 if self.first else None, self.stats)

    def line(self) -> str:
        total = time.perf_counter() - self.t0
        s = self.stats or Stats()
        ttft = f"{self.first - self.t0:.3f}s" if self.first else "-"
        gen = total - (self.first - self.t0) if self.first else 0.0
        tps = f"{(s.completion_tokens - 1) / gen:.1f}" if gen > 0 and s.completion_tokens > 1 else "-"
        return (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.path} {self.status} prompt={s.prompt_tokens} "
                f"cached={s.cached_tokens} completion={s.completion_tokens} ttft={ttft} tok/s={tps} time={total:.3f}s{self.note}")


def build_app(backend, model_id: str, *, api_key: str | None = None, max_queue: int = 16,
              aliases: tuple[str, ...] = (), parallel: int = 1) -> FastAPI:
    """An app serving BACKEND (already loaded with MODEL_ID, also asked for by the names in ALIASES) under the
    OpenAI API; a request for any other model gets 404 model_not_found, and every response names MODEL_ID.
    PARALLEL requests generate at once (the backend must take that many concurrent calls)."""
    served = {model_id, *aliases}
    queue = EngineQueue(max_queue=max_queue, parallel=parallel)
    told: set = set()  # the backend notices already in the log
    metrics = Metrics(waiting=lambda: max(0, queue.depth - queue.running),
                      cache_bytes=lambda: getattr(backend, "prompt_cache_bytes", 0))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        queue.shutdown()

    app = FastAPI(title="chatcli", summary="OpenAI-compatible chat and text completions", docs_url=None,
                  redoc_url=None, lifespan=lifespan)
    app.state.queue, app.state.backend, app.state.metrics = queue, backend, metrics
    app.openapi = lambda: openapi(app)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        # FastAPI's 422 for a body or parameter that fails its model, in OpenAI's shape and status (the routes parse
        # their bodies themselves, so this is a net for any route that does not)
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse(ApiError(400, f"'{where}': {first['msg']}" if where else first["msg"],
                                     param=where or None).body(), 400)

    @app.exception_handler(404)
    async def _not_found(request: Request, e):
        return JSONResponse(ApiError(404, f"no route {request.url.path}; see /v1/models", code="not_found").body(), 404)

    @app.exception_handler(405)
    async def _bad_method(request: Request, e):
        return JSONResponse(ApiError(405, f"{request.method} is not allowed on {request.url.path}").body(), 405)

    def _auth(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key; send Authorization: Bearer KEY", kind="authentication_error",
                           code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, "queue": queue.depth}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        """Prometheus' text format; open like /health, for a scraper."""
        body, kind = metrics.text()
        return Response(body, media_type=kind)

    @app.get("/v1/models")
    async def models(request: Request):
        _auth(request)
        card = {"id": model_id, "object": "model", "created": 0, "owned_by": "chatcli",
                "max_model_len": await asyncio.to_thread(backend.context_length)}
        return {"object": "list", "data": [card]}

    @app.post("/tokenize", openapi_extra=body_of(TokenizeRequest), responses=replies(None))
    async def tokenize(request: Request):
        """vLLM's /tokenize shape, so chatcli's openai backend can count tokens exactly."""
        _auth(request)
        body = await _body(request)
        messages = wire.parse_request({"messages": body.get("messages")}, chat=True).messages
        count = await asyncio.to_thread(backend.count_tokens, messages)
        return {"count": count, "max_model_len": await asyncio.to_thread(backend.context_length)}

    async def _prepare(request: Request, chat: bool) -> GenRequest:
        _auth(request)
        req = wire.parse_request(await _body(request), chat=chat)
        if req.response_format is not None:
            from chatcli.structured import require_support

            require_support(backend, "stream_chat" if chat else "stream_completion")
        if chat:
            _supported(backend, req)
        if req.model is not None and req.model not in served:
            raise ApiError(404, f"The model `{req.model}` does not exist; this server serves {model_id}"
                           + (f" (also as {', '.join(sorted(aliases))})" if aliases else ""),
                           param="model", code="model_not_found")
        if chat:
            # both may do I/O (a proxied server) or tokenize: off the event loop
            context = await asyncio.to_thread(backend.context_length)
            size = await asyncio.to_thread(backend.count_tokens, req.messages)
            if size >= context:
                raise wire.bad(f"the prompt is {size} tokens but the model's context is {context} tokens; "
                               f"shorten the messages", "messages")
            if not req.max_tokens_given or req.params.max_tokens > context - size:
                req.params = req.params.with_(max_tokens=context - size)
        return req

    def _generator(req: GenRequest, cancel: threading.Event):
        fmt = {"response_format": req.response_format} if req.response_format else {}  # only when asked for
        if req.messages is not None:
            # only when the request says: a backend without the keyword (a plugin) still serves the rest
            think = {"think": req.think} if req.think is not None else {}
            if req.tools:
                def with_tools():
                    forced = {"tool_choice": "required"} if req.tool_choice == "required" else {}  # only when asked for
                    chunks = backend.stream_chat(req.messages, req.params, cancel=cancel, tools=req.tools, **fmt,
                                                 **forced, **think)
                    return _logging_notices(chunks if req.parallel_tool_calls else first_call_only(chunks), told)
                return with_tools
            return lambda: _logging_notices(backend.stream_chat(req.messages, req.params, cancel=cancel, **fmt, **think),
                                            told)
        return lambda: _logging_notices(backend.stream_completion(req.prompt, req.params, cancel=cancel, **fmt), told)

    async def _complete(request: Request, chat: bool):
        record = _Record(request.url.path, metrics)
        try:
            req = await _prepare(request, chat)
            ticket = queue.reserve()
        except QueueFull as e:
            record.status = 503
            record.log()
            raise ApiError(503, f"the server is busy ({e.waiting} requests waiting); retry after {e.retry_after}s",
                           kind="server_busy", headers={"Retry-After": str(e.retry_after)}) from None
        except Exception as e:
            err = _status_of(e)
            record.status = err.status
            record.log()
            raise err from None
        cancel = threading.Event()
        make = _generator(req, cancel)
        gen = queue.run(ticket, lambda: metrics.rows(make()), cancel).__aiter__()
        rid, model = wire.new_id(chat), model_id
        watch = asyncio.ensure_future(_disconnected(request))
        parts: list[Chunk] = []
        try:
            # Wait (in the queue, then for the first chunk) before answering, so that early failures get a
            # real status code instead of an error event inside a 200 stream.
            while True:
                chunk = await _next(gen, watch)
                if chunk is None:
                    break
                parts.append(chunk)
                if chunk.text or chunk.reasoning:
                    record.piece(chunk)
                if req.stream and (chunk.text or chunk.reasoning or chunk.finish_reason or chunk.tool_calls):
                    break
        except _Gone:
            record.status, record.note = 499, " client-disconnected"
            _finish(record)
            return JSONResponse({}, status_code=499)
        except Exception as e:
            err = _status_of(e)
            record.status = err.status
            _finish(record)
            raise err from None
        finally:
            watch.cancel()
        if req.stream:
            events = _sse(parts, gen, record, rid, model, chat, req.include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                                     background=BackgroundTask(_after_stream, events, cancel, record))
        last = parts[-1] if parts else Chunk("", "stop")
        record.stats = last.stats
        _finish(record)
        calls = message_calls([d for c in parts for d in c.tool_calls])
        return wire.full_response(rid, model, chat, "".join(c.text for c in parts), last.finish_reason, last.stats,
                                  calls or None, reasoning="".join(c.reasoning for c in parts))

    def _finish(record: _Record) -> None:
        queue.note_duration(time.perf_counter() - record.t0)
        record.log()

    async def _sse(head: list[Chunk], gen: AsyncIterator[Chunk], record: _Record, rid, model, chat, include_usage):
        async def chunks():
            for chunk in head:
                yield chunk
            async for chunk in gen:
                yield chunk

        sent_any = False
        try:
            if chat:
                yield wire.stream_event(rid, model, chat, None, role=True)
            async for chunk in chunks():
                if chunk.reasoning and chat:
                    record.piece(chunk)
                    sent_any = True
                    yield wire.stream_event(rid, model, chat, None, reasoning=chunk.reasoning)
                if chunk.text:
                    record.piece(chunk)
                    sent_any = True
                    yield wire.stream_event(rid, model, chat, chunk.text)
                if chunk.tool_calls:
                    sent_any = True
                    yield wire.stream_event(rid, model, chat, None, tool_calls=delta_calls(chunk.tool_calls))
                if chunk.finish_reason:
                    record.stats = chunk.stats
                    yield wire.stream_event(rid, model, chat, None, chunk.finish_reason)
            if include_usage:
                yield wire.stream_event(rid, model, chat, None, stats=record.stats, usage_only=True)
            record.done = True
            yield "data: [DONE]\n\n"
        except (GeneratorExit, asyncio.CancelledError):  # the client left mid-stream: closed, or cancelled
            if not record.done:
                record.status, record.note = 499, " client-disconnected"
            raise
        except Exception as e:  # headers are gone; an error event tells the client the reply is incomplete
            err = _status_of(e)
            record.status, record.note = err.status, f" error-after-{'tokens' if sent_any else 'start'}"
            record.done = True
            yield wire.error_event(err)
        finally:
            _finish(record)

    async def _after_stream(events, cancel: threading.Event, record: _Record) -> None:
        # Starlette stops iterating when the client disconnects but does not close the iterator: stop the
        # generation now (not at garbage collection) and log the request.
        if not record.done:
            record.status, record.note = 499, " client-disconnected"
        cancel.set()
        await events.aclose()

    @app.post("/v1/chat/completions", openapi_extra=body_of(ChatCompletionRequest), responses=replies(ChatCompletion))
    async def chat_completions(request: Request):
        return await _complete(request, chat=True)

    @app.post("/v1/completions", openapi_extra=body_of(CompletionRequest), responses=replies(Completion))
    async def completions(request: Request):
        return await _complete(request, chat=False)

    return app


def _takes(func, keyword: str) -> bool:
    """Whether FUNC accepts KEYWORD (named, or through **kwargs)."""
    import inspect

    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return keyword in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _supported(backend, req: GenRequest) -> None:
    """A 400 for tools a backend cannot take (a plugin written before them), said up front rather than a TypeError
    mid-request; a thinking switch such a backend has no use for is dropped, as a model that never thinks ignores it."""
    name = getattr(backend, "name", type(backend).__name__)
    if req.tools and not _takes(backend.stream_chat, "tools"):
        raise wire.bad(f"the {name} backend does not support tool calling; send the request without tools", "tools")
    if req.tools and req.tool_choice == "required" and not _takes(backend.stream_chat, "tool_choice"):
        raise wire.bad(f"the {name} backend cannot force a tool call; use tool_choice auto", "tool_choice")
    if req.think is not None and not _takes(backend.stream_chat, "think"):
        req.think = None


class _Gone(Exception):
    """The client disconnected before the answer started."""


async def _next(gen: AsyncIterator[Chunk], watch: asyncio.Future) -> Chunk | None:
    """The next chunk, None at the end, or _Gone (after closing GEN, which cancels generation) if WATCH fired."""
    step = asyncio.ensure_future(gen.__anext__())
    await asyncio.wait({step, watch}, return_when=asyncio.FIRST_COMPLETED)
    if not step.done():
        step.cancel()
        try:
            await step
        except (asyncio.CancelledError, StopAsyncIteration):
            pass
        await gen.aclose()
        raise _Gone()
    try:
        return step.result()
    except StopAsyncIteration:
        return None


async def _disconnected(request: Request) -> None:
    """Return when the client has gone away."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)
