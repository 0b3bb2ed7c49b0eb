"""Fuzz the *values* of a chat or completion body: a valid body has its keys, at any depth (a message's tool_calls,
a call's function, a sampling parameter), dropped or replaced, one at a time by each of a list of hostile values
(exhaustively) and one or two at a time by values of random JSON type (hypothesis), and parse_request must accept it
or refuse it with a 400 (ApiError), never raise anything else, which the server would answer as a 500. schemathesis
(test_server_schema) covers the routes end to end but with few examples, most of them refused at the first bad key;
mutating a valid body reaches every check behind it.

CHATCLI_FUZZ_EXAMPLES sets the number of random cases (500 by default: single keys are covered by the exhaustive pass,
these add pairs).
"""

from __future__ import annotations

import copy
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.server.protocol import ApiError, parse_request

EXAMPLES = int(os.environ.get("CHATCLI_FUZZ_EXAMPLES", "500"))

WEATHER = {"type": "function", "function": {"name": "weather", "description": "the weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
# The keys the parser reads that ask for nothing at these values: in the base bodies so that mutations reach them
OFF = {"n": 1, "logprobs": False, "echo": False, "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_k": 40,
       "min_p": 0.05, "repeat_penalty": 1.1}
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
    **OFF,
}
COMPLETION = {"model": "m", "prompt": "Once upon a time", "temperature": 0.0, "max_tokens": 8, "stop": "\n", "seed": 3,
              "stream": False, "response_format": {"type": "json_object"}, **OFF}
# One of each JSON type and edge, for the exhaustive pass: every path of a base body, each of these in turn
HOSTILE = [None, True, False, 0, -1, 2**64, 1e308, float("nan"), "", "x", [], [1], [None], {}, {"a": 1}]

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


_DROP = object()  # as a mutation's value: delete the key (a list item stays; only a dict's key can be absent)


def _mutate(body, path: tuple, value) -> None:
    """BODY with the value at PATH replaced by VALUE, or deleted for _DROP, in place."""
    *parent, last = path
    node = body
    for k in parent:
        node = node[k]
    if value is _DROP and isinstance(node, dict):
        del node[last]
    elif value is not _DROP:
        node[last] = value


@st.composite
def mutated(draw, base: dict) -> dict:
    body = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 2))):
        paths = list(_paths(body))
        if not paths:
            break
        _mutate(body, draw(st.sampled_from(paths)), _DROP if draw(st.booleans()) else draw(json_values))
    return body


def _parses_or_400(body: dict, chat: bool) -> None:
    try:
        parse_request(body, chat=chat)
    except ApiError as e:
        assert e.status == 400, (e.status, body)


def test_the_unmutated_bodies_parse():
    # the base bodies reach the checks behind every key: none is refused as it stands
    assert parse_request(copy.deepcopy(CHAT), chat=True).tools
    assert parse_request(copy.deepcopy(COMPLETION), chat=False).prompt


@pytest.mark.parametrize("base, chat", [(CHAT, True), (COMPLETION, False)], ids=["chat", "completion"])
def test_every_key_of_a_valid_body_dropped_or_given_any_type_is_parsed_or_400(base, chat):
    """Exhaustive over the paths, where the random mutations below would reach a deep key only by luck: both 500s this
    file was written for (an integer messages[i].tool_calls, an empty logprobs list) are single replacements."""
    for path in _paths(base):
        for value in [_DROP, *HOSTILE]:
            body = copy.deepcopy(base)
            _mutate(body, path, value)
            _parses_or_400(body, chat)


@SETTINGS
@given(body=mutated(CHAT))
def test_any_mutated_chat_body_is_parsed_or_refused_with_400(body):
    _parses_or_400(body, chat=True)


@SETTINGS
@given(body=mutated(COMPLETION))
def test_any_mutated_completion_body_is_parsed_or_refused_with_400(body):
    _parses_or_400(body, chat=False)
