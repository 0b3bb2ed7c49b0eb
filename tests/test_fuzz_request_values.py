"""Fuzz the *values* of a chat or completion body: a valid body has one or two of its keys, at any depth (a
message's tool_calls, a call's function, a sampling parameter), dropped or replaced by a value of a random JSON type,
and parse_request must accept it or refuse it with a 400 (ApiError), never raise anything else, which the server would
answer as a 500. schemathesis (test_server_schema) covers the routes end to end but with few examples, most of them
refused at the first bad key; mutating a valid body reaches every check behind it.

CHATCLI_FUZZ_EXAMPLES sets the number of cases (1500 by default: a body has about 60 paths, so each is hit about 25 times).
"""

from __future__ import annotations

import copy
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.server.protocol import ApiError, parse_request

EXAMPLES = int(os.environ.get("CHATCLI_FUZZ_EXAMPLES", "1500"))

WEATHER = {"type": "function", "function": {"name": "weather", "description": "the weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "weather in Oslo?"}]},
        {"role": "assistant", "content": None, "reasoning_content": "a tool call",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ],
    "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "weather"}}, "parallel_tool_calls": True,
    "temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "stop": ["\n\n"], "seed": 1, "stream": True,
    "stream_options": {"include_usage": True}, "reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": False},
    "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
}
COMPLETION = {"model": "m", "prompt": "Once upon a time", "temperature": 0.0, "max_tokens": 8, "stop": "\n", "seed": 3,
              "stream": False, "response_format": {"type": "json_object"}}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _paths(value, prefix=()):
    """Every key and index path in VALUE, parents before children."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,))


@st.composite
def mutated(draw, base: dict) -> dict:
    body = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 2))):
        paths = list(_paths(body))
        if not paths:
            break
        *parent, last = draw(st.sampled_from(paths))
        node = body
        for k in parent:
            node = node[k]
        if draw(st.booleans()) and isinstance(node, dict):
            del node[last]
        else:
            node[last] = draw(json_values)
    return body


def _parses_or_400(body: dict, chat: bool) -> None:
    try:
        parse_request(body, chat=chat)
    except ApiError as e:
        assert e.status == 400, (e.status, body)


def test_the_unmutated_bodies_parse():
    assert parse_request(copy.deepcopy(CHAT), chat=True).tools
    assert parse_request(copy.deepcopy(COMPLETION), chat=False).prompt


@SETTINGS
@given(body=mutated(CHAT))
def test_any_mutated_chat_body_is_parsed_or_refused_with_400(body):
    _parses_or_400(body, chat=True)


@SETTINGS
@given(body=mutated(COMPLETION))
def test_any_mutated_completion_body_is_parsed_or_refused_with_400(body):
    _parses_or_400(body, chat=False)
