"""The OpenAPI document: the routes' request bodies (schema.py) and their replies, described for clients and tools.

The routes build their replies as dicts (protocol.py); the models here only describe them, so /openapi.json can say
what a reply and each streamed event hold, and schemathesis can check that they do.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from chatcli.server.schema import ChatCompletionRequest, CompletionRequest, FunctionCall, TokenizeRequest


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class PromptDetails(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptDetails | None = None


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantReply(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallOut] | None = None


Finish = Literal["stop", "length", "tool_calls"]


class ChatChoice(BaseModel):
    index: int
    message: AssistantReply
    logprobs: None
    finish_reason: Finish


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: Finish


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class DeltaFunction(BaseModel):
    name: str | None = None
    arguments: str


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None
    finish_reason: Finish | None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = Field(None, description="only on the last event, with stream_options.include_usage")


class TextChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: Finish | None


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChunkChoice]
    usage: Usage | None = Field(None, description="only on the last event, with stream_options.include_usage")


COMPONENTS = (ChatCompletionRequest, CompletionRequest, TokenizeRequest, ChatCompletionChunk, CompletionChunk)


_REF = "#/components/schemas/{model}"


def body_of(model: type[BaseModel]) -> dict:
    """A route's openapi_extra: MODEL as its JSON request body. The route reads the body itself (a size limit, a
    timeout, its own 400s), so FastAPI is told about the body here rather than by a parameter it would validate."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}}}


def replies(model: type[BaseModel] | None) -> dict:
    """A route's documented responses: MODEL (JSON, or an SSE stream when the request asks), and errors as OpenAI's."""
    ok: dict = {"description": "the reply"}
    if model is not None:
        chunk = {"$ref": _REF.format(model=model.__name__ + "Chunk")}, {"$ref": _REF.format(model="ErrorResponse")}
        # each event's data: a chunk, an error once the reply has started (the status is sent), or the end
        event = {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
            {"const": "[DONE]"},
            {"type": "string", "contentMediaType": "application/json", "contentSchema": {"anyOf": list(chunk)}}]}}}
        ok = {"model": model, "description": "the reply; with \"stream\": true, server-sent events of its chunks",
              "content": {"text/event-stream": {"schema": event}}}
    errors = {code: {"model": ErrorResponse, "description": why} for code, why in (
        (400, "invalid request"), (401, "missing or wrong API key"), (404, "unknown model"),
        (408, "the body came too slowly"), (413, "body over 1 MiB"), (503, "queue full; see Retry-After"),
        ("default", "a server or backend failure"))}
    return {200: ok, **errors}


def openapi(app) -> dict:
    """APP's OpenAPI document with the request models' schemas under components (body_of refers to them)."""
    from fastapi.openapi.utils import get_openapi
    from pydantic.json_schema import models_json_schema

    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        _, defs = models_json_schema([(m, "validation") for m in COMPONENTS], ref_template=_REF)
        doc.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        app.openapi_schema = doc
    return app.openapi_schema
