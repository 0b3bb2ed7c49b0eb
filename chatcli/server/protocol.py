"""OpenAI wire format: parse and validate request bodies, build responses and errors. No HTTP here."""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, replace

from pydantic import ValidationError

from chatcli.server import schema
from chatcli.server import tools as wire_tools
from chatcli.server.schema import EFFORTS, MAX_STOP, WIRE_NAMES
from chatcli.types import CHAT_ROLES, PARAM_NAMES, Message, ParamError, SamplingParams, Stats, api_default, check


class ApiError(Exception):
    """An HTTP error in OpenAI's format: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, kind: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON body OpenAI clients parse."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None) -> ApiError:
    """A 400 invalid_request_error."""
    return ApiError(400, message, param=param)


@dataclass
class GenRequest:
    """A validated request: chat messages or a raw prompt, sampling, and streaming options."""

    model: str | None
    messages: list[Message] | None
    prompt: str | None
    params: SamplingParams
    max_tokens_given: bool
    stream: bool
    include_usage: bool
    tools: list[dict] | None = None  # what the model may call (tool_choice applied); None: no tools
    parallel_tool_calls: bool = True  # False: only the reply's first call is answered
    tool_choice: str = "auto"  # "required": a call is enforced (a named tool is "required" over that one tool)
    response_format: dict | None = None  # structured output, checked (chatcli.structured); None: plain text
    think: bool | None = None  # thinking on or off (chat_template_kwargs.enable_thinking, reasoning_effort); None: the model's way


def parse_json(raw: bytes) -> dict:
    """The body as a JSON object, or a 400 naming what is wrong."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise bad(f"request body is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise bad(f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (RecursionError, ValueError) as e:  # nesting deeper than the parser's stack; an integer of 4,300+ digits
        raise bad(f"request body is not JSON this server accepts ({type(e).__name__}: nested too deep or a number too long)") from None
    if not isinstance(body, dict):
        raise bad("request body must be a JSON object")
    return body


def _number(body: dict, key: str, kind, default):
    value = body.get(key)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not math.isfinite(value):
        raise bad(f"'{key}' must be {'an integer' if kind is int else 'a number'}, got {value!r}", key)
    return kind(value)


def _text(content, where: str) -> str:
    """Message content: a string, or a list of text parts (images are not supported)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"{where}: only text content parts are supported", where)
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"{where} must be a string or a list of text parts", where)


def _messages(body: dict) -> list[Message]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("'messages' must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"{where} must be an object with role and content", where)
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for system
            role = "system"
        if role in ("tool", "assistant"):
            tm = _checked(wire_tools.tool_message, m, where, _text(m.get("content") or "", f"{where}.content"))
            if tm is not None:
                out.append(tm)
                continue
        if role not in CHAT_ROLES:
            raise bad(f"{where}.role must be one of {', '.join(CHAT_ROLES)}; got {role!r}", f"{where}.role")
        out.append(Message(role, _text(m.get("content"), f"{where}.content")))
    return [_with_reasoning(msg, m, f"messages[{i}]") for i, (msg, m) in enumerate(zip(out, raw))]


def _with_reasoning(msg: Message, m: dict, where: str) -> Message:
    """An assistant message with the reasoning a client sent back (reasoning_content, or vLLM's newer reasoning);
    the chat template decides whether the model sees it."""
    if msg.role != "assistant":
        return msg
    key = next((k for k in ("reasoning_content", "reasoning") if m.get(k) is not None), None)
    if key is None:
        return msg
    if not isinstance(m[key], str):
        raise bad(f"{where}.{key} must be a string", f"{where}.{key}")
    return replace(msg, reasoning=m[key])


def _think(body: dict) -> bool | None:
    """Thinking on or off as a request asks: chat_template_kwargs.enable_thinking (vLLM, llama.cpp), else
    reasoning_effort ("none" turns it off, any other effort on); None when it says nothing."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise bad("'chat_template_kwargs' must be an object like {\"enable_thinking\": false}", "chat_template_kwargs")
        value = kwargs.get("enable_thinking")
        if value is not None:
            if not isinstance(value, bool):
                raise bad("'chat_template_kwargs.enable_thinking' must be true or false", "chat_template_kwargs")
            return value
    effort = body.get("reasoning_effort")
    if effort is None:
        return None
    if effort not in EFFORTS:
        raise bad(f"'reasoning_effort' must be one of {', '.join(EFFORTS)}; got {effort!r}", "reasoning_effort")
    return effort != "none"


def _prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # a batch of one
    if not isinstance(prompt, str):
        raise bad("'prompt' must be a string (batches and token lists are not supported)", "prompt")
    return prompt


def _sampling(body: dict) -> tuple[SamplingParams, bool]:
    """The sampling parameters of a request, each checked by the schema (a 400 names the key as sent), the API's
    defaults for those left out; and whether max_tokens was given."""
    values = {}
    given = set()
    for name in PARAM_NAMES:
        key = next((k for k in WIRE_NAMES.get(name, (name,)) if body.get(k) is not None), None)
        if key is None:
            values[name] = api_default(name)
            continue
        value = body[key]
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise bad(f"'{key}' must be a string or a list of up to {MAX_STOP} strings", key)
        try:
            values[name] = check(name, value)
        except ParamError as e:
            raise bad(str(e), key) from None
        given.add(name)
    return SamplingParams(**values), "max_tokens" in given


def parse_request(body: dict, *, chat: bool) -> GenRequest:
    """Validate a /v1/chat/completions (chat=True) or /v1/completions body; unknown keys are ignored.

    The checks here come first, for their messages; then the body must also fit the schema's model (schema.py), so
    /openapi.json never promises what the server would refuse, nor allows what it would choke on."""
    try:
        req = _parse(body, chat)
    except ApiError:
        raise
    except Exception:
        # a hand check that met a type it did not expect: the schema names what is wrong in a 400; a body the
        # schema allows is then our bug, and stays a 500
        _validate(body, chat)
        raise
    _validate(body, chat)
    return req


def _validate(body: dict, chat: bool) -> None:
    try:
        (schema.ChatCompletionRequest if chat else schema.CompletionRequest).model_validate(body)
    except ValidationError as e:
        message, param = schema.first_error(e)
        raise bad(message, param) from None


def _parse(body: dict, chat: bool) -> GenRequest:
    n = _number(body, "n", int, 1)
    if n != 1:
        raise bad(f"only n=1 is supported; got n={n}", "n")
    for key in ("presence_penalty", "frequency_penalty"):
        if _number(body, key, float, 0.0) != 0.0:
            raise bad(f"'{key}' is not supported; use repeat_penalty (> 0, 1 disables it)", key)
    # what asks for a feature this server lacks; an empty or false value asks for nothing
    unsupported = [k for k in ("logprobs", "echo") + (() if chat else ("tools",)) if body.get(k) not in (None, False, 0, [])]
    if unsupported:
        raise bad(f"'{unsupported[0]}' is not supported by this server", unsupported[0])
    response_format = _format(body)
    params, max_tokens_given = _sampling(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise bad("'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad("'model' must be a string", "model")
    return GenRequest(
        model=model,
        messages=_messages(body) if chat else None,
        prompt=None if chat else _prompt(body),
        params=params,
        max_tokens_given=max_tokens_given,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        tools=_checked(wire_tools.parse_tools, body) if chat else None,
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        tool_choice=wire_tools.forced_choice(body) if chat else "auto",
        response_format=response_format,
        think=_think(body) if chat else None,
    )


def _format(body: dict) -> dict | None:
    """response_format, or llama.cpp's `grammar` (Lark or GBNF), checked: a 400 names what is wrong in the schema."""
    from chatcli.errors import UsageError
    from chatcli.structured import check_format

    grammar, fmt = body.get("grammar"), body.get("response_format")
    key = "response_format" if grammar is None else "grammar"
    try:
        if grammar is None:
            return check_format(fmt)
        if check_format(fmt) is not None:
            raise UsageError("give response_format or grammar, not both")
        return check_format({"type": "grammar", "grammar": grammar})
    except UsageError as e:
        raise bad(str(e), key) from None


def _checked(func, *args):
    try:
        return func(*args)
    except wire_tools.ToolsError as e:
        raise bad(str(e), e.param) from None


# -- responses -----------------------------------------------------------------------------------------------

def new_id(chat: bool) -> str:
    """A fresh response id."""
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(stats: Stats | None) -> dict:
    """OpenAI's usage object from our Stats."""
    p = stats.prompt_tokens if stats else 0
    c = stats.completion_tokens if stats else 0
    out = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    if stats and stats.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": stats.cached_tokens}
    return out


def finish(reason: str | None) -> str:
    """Our finish_reason in OpenAI's vocabulary (an interrupted reply reached nobody; call it stop)."""
    return reason if reason in ("length", "tool_calls") else "stop"


def full_response(req_id: str, model: str, chat: bool, text: str, reason: str | None, stats: Stats | None,
                  tool_calls: list[dict] | None = None, reasoning: str = "") -> dict:
    """A non-streamed chat.completion or text_completion."""
    if chat:
        message = {"role": "assistant", "content": text or (None if tool_calls else text)}
        if reasoning:
            message.update(reasoning_fields(reasoning))
        if tool_calls:
            message["tool_calls"] = tool_calls
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish(reason)}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish(reason)}
    return {"id": req_id, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": [choice], "usage": usage(stats)}


def reasoning_fields(text: str) -> dict:
    """The reasoning under both names clients read: reasoning_content (DeepSeek, llama.cpp, older vLLM) and
    reasoning (vLLM and LM Studio now)."""
    return {"reasoning_content": text, "reasoning": text}


def stream_event(req_id: str, model: str, chat: bool, text: str | None, reason: str | None = None,
                 *, role: bool = False, stats: Stats | None = None, usage_only: bool = False,
                 tool_calls: list[dict] | None = None, reasoning: str = "") -> str:
    """One SSE `data:` event of a chat.completion.chunk or text_completion stream."""
    if usage_only:
        choices = []
    elif chat:
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
        if tool_calls:
            delta["tool_calls"] = tool_calls
        if reasoning:
            delta.update(reasoning_fields(reasoning))
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish(reason) if reason else None}]
    else:
        choices = [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish(reason) if reason else None}]
    event = {"id": req_id, "object": "chat.completion.chunk" if chat else "text_completion",
             "created": int(time.time()), "model": model, "choices": choices}
    if usage_only:
        event["usage"] = usage(stats)
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


def error_event(err: ApiError) -> str:
    """An error inside a started stream; OpenAI's SDK raises APIError when it reads one."""
    return f"data: {json.dumps(err.body())}\n\n"
