"""Tool calling through `chatcli serve`: the official openai client against a real server on 127.0.0.1 over the real
Qwen2.5-Coder-0.5B at temperature 0."""

from __future__ import annotations

import json

import openai
import pytest

from chatcli.server.protocol import ApiError, parse_request
from tests.test_templates_tools import WEATHER

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_weather_call_stream_and_whole(qwen_server):
    args = dict(model="qwen", messages=ASK, tools=[WEATHER], temperature=0, max_tokens=60)
    whole = qwen_server.chat.completions.create(**args)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    events = list(qwen_server.chat.completions.create(**args, stream=True))
    pieces = [tc for e in events if e.choices for tc in (e.choices[0].delta.tool_calls or [])]
    assert pieces[0].id and pieces[0].function.name == "get_weather"
    assert all(p.id is None and p.function.name is None for p in pieces[1:])
    assert "".join(p.function.arguments or "" for p in pieces) == call.function.arguments
    assert events[-1].choices[0].finish_reason == "tool_calls"
    # The call's result goes back as a tool message and the model answers in text.
    follow = qwen_server.chat.completions.create(
        model="qwen", temperature=0, max_tokens=40, tools=[WEATHER],
        messages=[*ASK, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'}])
    # The 0.5B model answers by restating its call and the result rather than in prose; the temperature is there.
    assert "21" in follow.choices[0].message.content and follow.choices[0].finish_reason != "tool_calls"


def test_tool_choice_none_answers_in_text(qwen_server):
    whole = qwen_server.chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER], tool_choice="none",
                                                temperature=0, max_tokens=12)
    assert not whole.choices[0].message.tool_calls and whole.choices[0].finish_reason != "tool_calls"


@pytest.mark.parametrize("body", [
    {"tool_choice": "required"},
    {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
    {"tools": [WEATHER], "tool_choice": "sometimes"},
    {"tools": [{"name": "x"}]},
    {"tools": [WEATHER], "parallel_tool_calls": "yes"},
    # a non-list tool_calls was iterated and answered 500 (schemathesis found the integer one in CI)
    {"messages": ASK + [{"role": "assistant", "content": "x", "tool_calls": 97572431}]},
    {"messages": ASK + [{"role": "assistant", "tool_calls": {"id": "a"}}]},
])
def test_inconsistent_tool_requests_are_400(body):
    with pytest.raises(ApiError) as e:
        parse_request({"messages": ASK} | body, chat=True)
    assert e.value.status == 400


def test_named_tool_choice_keeps_only_that_tool():
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
    req = parse_request({"messages": ASK, "tools": [WEATHER, other],
                         "tool_choice": {"type": "function", "function": {"name": "other"}}}, chat=True)
    assert req.tools == [other]


def test_parallel_tool_calls_false_keeps_the_first_call():
    from chatcli.server.tools import first_call_only
    from chatcli.types import Chunk, ToolCallDelta

    chunks = [Chunk("", tool_calls=(ToolCallDelta(0, "a", "f"), ToolCallDelta(0, arguments="{}"))),
              Chunk("", "tool_calls", tool_calls=(ToolCallDelta(1, "b", "g"), ToolCallDelta(1, arguments="{}")))]
    out = [d for c in first_call_only(iter(chunks)) for d in c.tool_calls]
    assert [d.index for d in out] == [0, 0]
    assert parse_request({"messages": ASK, "tools": [WEATHER], "parallel_tool_calls": False}, chat=True).parallel_tool_calls is False


def test_openai_backend_sends_tools_and_reads_the_calls(qwen_server):
    """The openai backend against our own server: the tools go out, the call comes back as deltas, and the call and
    its result, sent back as history, give a text answer."""
    from chatcli.backends.openai import OpenAIBackend
    from chatcli.types import Message, SamplingParams, ToolCall

    backend = OpenAIBackend(base_url=str(qwen_server.base_url))
    backend.load("qwen")
    params = SamplingParams(temperature=0, max_tokens=60)
    ask = [Message("user", ASK[0]["content"])]
    chunks = list(backend.stream_chat(ask, params, tools=[WEATHER]))
    assert chunks[-1].finish_reason == "tool_calls"
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas[0].id and deltas[0].name == "get_weather"
    assert json.loads("".join(d.arguments for d in deltas)) == {"city": "Paris"}
    call = ToolCall(deltas[0].id, "get_weather", "".join(d.arguments for d in deltas))
    history = [*ask, Message("assistant", "", tool_calls=(call,)),
               Message("tool", '{"temperature_c": 21}', tool_call_id=call.id)]
    follow = list(backend.stream_chat(history, params.with_(max_tokens=20), tools=[WEATHER]))
    assert "".join(c.text for c in follow).strip() and follow[-1].finish_reason in ("stop", "length")


def test_openai_stream_invariants_with_tools(qwen_server):
    """What OpenAI's clients rely on, checked with the official client on a tool-call stream and a text stream: the
    role only in the first chunk, one id for the whole stream, finish_reason exactly once and in the last choice
    chunk; an inconsistent tool_choice is a 400 over HTTP too."""
    for tools in ([WEATHER], None):
        extra = {"tools": tools} if tools else {}
        events = list(qwen_server.chat.completions.create(model="qwen", messages=ASK, temperature=0, max_tokens=60,
                                                          stream=True, **extra))
        with_choices = [e for e in events if e.choices]
        assert with_choices[0].choices[0].delta.role == "assistant"
        assert all(e.choices[0].delta.role is None for e in with_choices[1:])
        assert len({e.id for e in events}) == 1
        finishes = [e.choices[0].finish_reason for e in with_choices if e.choices[0].finish_reason]
        assert len(finishes) == 1 and with_choices[-1].choices[0].finish_reason == finishes[0]
        assert finishes[0] == ("tool_calls" if tools else finishes[0])
    with pytest.raises(openai.BadRequestError):
        qwen_server.chat.completions.create(model="qwen", messages=ASK, tools=[WEATHER], tool_choice="sometimes")
