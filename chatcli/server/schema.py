"""The request and response bodies as pydantic models: what /openapi.json says, and a check after protocol.py's.

protocol.py stays the source of the 400s' wording (each names the key and the fix); these models describe the same
contract to clients and tools (schemathesis, SDK generators) and validate what protocol.py does not look into, so
nothing the schema rules out is served. The sampling parameters' fields are generated from chatcli.types' one schema,
ranges included (parsed from each Spec's rule), so the flags, the config and the API cannot drift apart.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, create_model

from chatcli.types import PARAMS, Spec, api_default

MAX_STOP = 4  # as OpenAI
# The request keys that carry a parameter under another name (OpenAI's newer one, or vLLM's), the first given wins.
WIRE_NAMES = {"max_tokens": ("max_completion_tokens", "max_tokens"), "repeat_penalty": ("repeat_penalty", "repetition_penalty")}
EFFORTS = ("none", "minimal", "low", "medium", "high")

_INTERVAL = re.compile(r"in ([\[(])\s*([^,]+),\s*([^\])]+)([\])])")
_BOUND = re.compile(r"(>=|>|<=|<)\s*(\S+)")


def _value(text: str) -> float:
    base, _, power = text.strip().partition("^")
    return float(base) ** int(power) if power else float(base)


def bounds(spec: Spec) -> dict[str, float]:
    """The numeric range of SPEC as pydantic's ge/gt/le/lt, read from its rule ("in (0, 1]", ">= 0 (0 is greedy)")."""
    if spec.kind is tuple:
        return {}
    found = _INTERVAL.match(spec.rule)
    if found:
        lo, lo_v, hi_v, hi = found.groups()
        return {("ge" if lo == "[" else "gt"): _value(lo_v), ("le" if hi == "]" else "lt"): _value(hi_v)}
    found = _BOUND.match(spec.rule)
    if found:
        op, v = found.groups()
        return {{">=": "ge", ">": "gt", "<=": "le", "<": "lt"}[op]: _value(v)}
    raise ValueError(f"the rule {spec.rule!r} is not a range this module can read; add its form to bounds()")


def _param_field(name: str, spec: Spec) -> tuple[Any, Any]:
    default = api_default(name)
    doc = f"{spec.help} Default: {'as long as the context allows' if name == 'max_tokens' else default}."
    if spec.kind is tuple:
        stop = Annotated[str, Field(min_length=1)]
        kind: Any = Union[stop, Annotated[list[stop], Field(max_length=MAX_STOP)]]
    else:
        limits = {k: (int(v) if spec.kind is int and math.isfinite(v) else v) for k, v in bounds(spec).items()}
        kind = Annotated[spec.kind, Field(**limits)]
    # null is "left out" for every parameter on the wire (the API's default applies), not only for the nullable seed
    return (kind | None, Field(default=None, description=doc))


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown keys are ignored, as OpenAI's own server does


Sampling = create_model("SamplingParams", __base__=_Body, **{
    wire: _param_field(name, spec) for name, spec in PARAMS.items() for wire in WIRE_NAMES.get(name, (name,))})


class TextPart(_Body):
    type: Literal["text"]
    text: str


Content = Union[str, list[TextPart]]


class SystemMessage(_Body):
    role: Literal["system", "developer"]
    content: Content


class UserMessage(_Body):
    role: Literal["user"]
    content: Content


class FunctionCall(_Body):
    name: str
    arguments: str | dict[str, Any] | None = Field(None, description="JSON text (an object is taken as JSON too)")


class ToolCallIn(_Body):
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCall


class AssistantMessage(_Body):
    role: Literal["assistant"]
    content: Content
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallIn] | None = None


class AssistantToolCalls(AssistantMessage):
    """An assistant turn that called tools: its content may be null."""

    content: Content | None = None
    tool_calls: Annotated[list[ToolCallIn], Field(min_length=1)]


class ToolMessage(_Body):
    role: Literal["tool"]
    content: Content | None = None
    tool_call_id: str


def _role(m: Any) -> str | None:
    """Which message shape M is: its role, an assistant turn with tool calls apart (null content is legal there)."""
    role = m.get("role") if isinstance(m, dict) else getattr(m, "role", None)
    calls = m.get("tool_calls") if isinstance(m, dict) else getattr(m, "tool_calls", None)
    return "assistant-calls" if role == "assistant" and calls else ("system" if role == "developer" else role)


ChatMessage = Annotated[Union[Annotated[SystemMessage, Tag("system")], Annotated[UserMessage, Tag("user")],
                              Annotated[AssistantMessage, Tag("assistant")],
                              Annotated[AssistantToolCalls, Tag("assistant-calls")],
                              Annotated[ToolMessage, Tag("tool")]], Discriminator(_role)]


class FunctionDef(_Body):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class FormatText(_Body):
    type: Literal["text"]


class FormatJsonObject(_Body):
    type: Literal["json_object"]


class JsonSchemaSpec(_Body):
    name: str = "schema"
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool = False
    description: str | None = None


class FormatJsonSchema(_Body):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


class FormatGrammar(_Body):
    type: Literal["grammar"]
    grammar: Annotated[str, Field(min_length=1, description="a Lark or GBNF grammar")]


ResponseFormat = Annotated[Union[FormatText, FormatJsonObject, FormatJsonSchema, FormatGrammar], Field(discriminator="type")]


class StreamOptions(_Body):
    include_usage: bool = False


class TemplateKwargs(_Body):
    enable_thinking: bool | None = None


class _Request(Sampling):
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = Field(None, description="only 1 is supported")
    presence_penalty: Annotated[float, Field(ge=0, le=0)] | None = Field(None, description="not supported: 0 only; use repeat_penalty")
    frequency_penalty: Annotated[float, Field(ge=0, le=0)] | None = Field(None, description="not supported: 0 only; use repeat_penalty")
    logprobs: Literal[False, 0] | None = Field(None, description="not supported")
    echo: Literal[False] | None = Field(None, description="not supported")
    response_format: ResponseFormat | None = None
    grammar: Annotated[str, Field(min_length=1)] | None = Field(None, description="llama.cpp's: a Lark or GBNF grammar, instead of response_format")


class ChatCompletionRequest(_Request):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: TemplateKwargs | None = None
    reasoning_effort: Literal[EFFORTS] | None = None


class CompletionRequest(_Request):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1, description="a batch of one")]


class TokenizeRequest(_Body):
    model: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]


_NOT_KEYS = {"str", "int", "float", "bool", "dict", "list", "none", "system", "developer", "user", "assistant",
             "assistant-calls", "tool", "json_object", "json_schema"}  # not "text" and "grammar": keys too


def first_error(e: ValidationError) -> tuple[str, str]:
    """The first problem pydantic found as (message, param): the key path as sent, then what it wanted."""
    err = e.errors(include_url=False)[0]
    path = ""
    for part in err["loc"]:
        if isinstance(part, str) and (part in _NOT_KEYS or not part.isidentifier()):
            continue  # a union's branch (a type, or a discriminator's value), not a key the client sent
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return f"'{path}': {err['msg']}", str(err["loc"][0]) if err["loc"] else None
