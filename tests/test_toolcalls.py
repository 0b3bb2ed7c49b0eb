"""The hermes tool-call parser: whole replies, replies cut anywhere, malformed calls kept as text."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.toolcalls import HERMES, detect_format, make_parser, parse_all

QWEN_LIKE = "{%- if tools %}...<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call>"
# Replies as Qwen2.5 writes them.
REPLIES = [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": {}}\n'
    '</tool_call>',
    'no call <tool_call>{"name": broken}</tool_call> after',
    'a < b and <tool but not a call',
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}',  # the model stopped before the close tag
]


def pieces_parse(text: str, cuts: list[int]) -> tuple[str, list]:
    counter = itertools.count()
    parser = make_parser(QWEN_LIKE, lambda: f"call_{next(counter)}")
    out, calls = [], []
    bounds = [0, *sorted(set(cuts)), len(text)]
    for a, b in itertools.pairwise(bounds):
        t, c = parser.feed(text[a:b])
        out.append(t)
        calls += c
    t, c = parser.finish()
    return "".join(out) + t, calls + c


def test_format_from_template_text():
    assert detect_format(QWEN_LIKE) == HERMES
    assert detect_format("{{ messages }}") is None and detect_format(None) is None
    assert parse_all("{{ messages }}", REPLIES[0]) == (REPLIES[0], [])


def test_whole_replies():
    text, calls = parse_all(QWEN_LIKE, REPLIES[0])
    assert text == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    text, calls = parse_all(QWEN_LIKE, REPLIES[1])
    assert text == "Let me check.\n" and calls[0].id == "call_0"
    text, calls = parse_all(QWEN_LIKE, REPLIES[2])
    assert [c.name for c in calls] == ["a", "b"] and [c.id for c in calls] == ["call_0", "call_1"] and text == "\n"
    assert parse_all(QWEN_LIKE, REPLIES[3]) == (REPLIES[3], [])
    assert parse_all(QWEN_LIKE, REPLIES[4]) == (REPLIES[4], [])
    text, calls = parse_all(QWEN_LIKE, REPLIES[5])
    assert text == "" and json.loads(calls[0].arguments) == {"city": "Zürich"}


def test_one_character_at_a_time():
    for reply in REPLIES:
        assert pieces_parse(reply, list(range(len(reply)))) == parse_all(QWEN_LIKE, reply)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REPLIES), st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_any_split_gives_the_same_calls(reply, cuts):
    assert pieces_parse(reply, [c for c in cuts if c <= len(reply)]) == parse_all(QWEN_LIKE, reply)


def test_text_streams_at_once_and_only_a_possible_tag_waits():
    parser = make_parser(QWEN_LIKE)
    assert parser.feed("hello <to") == ("hello ", [])
    assert parser.feed("day") == ("<today", [])


def test_real_qwen_template_is_hermes():
    from tests.test_templates_tools import qwen_folder

    template = json.loads((qwen_folder() / "tokenizer_config.json").read_text())["chat_template"]
    assert detect_format(template) == HERMES


def chunks_of(text: str, size: int = 3):
    from chatcli.types import Chunk

    parts = [text[i:i + size] for i in range(0, len(text), size)]
    return [Chunk(p) for p in parts[:-1]] + [Chunk(parts[-1], finish_reason="stop")]


def test_backend_chunks_become_deltas():
    from chatcli.backends.localtools import with_tool_calls

    out = list(with_tool_calls(iter(chunks_of(REPLIES[1])), QWEN_LIKE, {"get_weather"}))
    assert "".join(c.text for c in out) == "Let me check.\n" and out[-1].finish_reason == "tool_calls"
    deltas = [d for c in out for d in c.tool_calls]
    assert deltas[0].name == "get_weather" and deltas[0].id and deltas[1].id is None and deltas[1].name is None
    assert json.loads(deltas[1].arguments) == {"city": "Paris"}
    bare = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    out = list(with_tool_calls(iter(chunks_of(bare)), QWEN_LIKE, {"get_weather"}))
    assert out[-1].finish_reason == "tool_calls" and "".join(c.text for c in out) == ""
    # Bare JSON naming no given tool stays text; plain text streams as it comes.
    out = list(with_tool_calls(iter(chunks_of(bare)), QWEN_LIKE, {"other"}))
    assert "".join(c.text for c in out) == bare and out[-1].finish_reason == "stop"
    out = list(with_tool_calls(iter(chunks_of("Hello there")), QWEN_LIKE, {"get_weather"}))
    assert out[0].text == "Hel" and "".join(c.text for c in out) == "Hello there"


def test_llama3_bare_json_calls():
    from chatcli.backends.localtools import with_tool_calls
    from chatcli.toolcalls import LLAMA3

    llama = 'Respond in the format {"name": function name, "parameters": dictionary}...{{ "<|start_header_id|>ipython" }}'
    assert detect_format(llama) == LLAMA3
    reply = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'
    out = list(with_tool_calls(iter(chunks_of(reply)), llama, {"get_weather"}))
    deltas = [d for c in out for d in c.tool_calls]
    assert out[-1].finish_reason == "tool_calls" and json.loads(deltas[1].arguments) == {"city": "Paris"}
    out = list(with_tool_calls(iter(chunks_of("Paris is sunny.")), llama, {"get_weather"}))
    assert "".join(c.text for c in out) == "Paris is sunny." and out[-1].finish_reason == "stop"


# A Mistral-style template (written here: it only has to teach the marker) and replies in both of Mistral's shapes.
MISTRAL_LIKE = '{%- if message.tool_calls %}{{- "[TOOL_CALLS] [" }}{%- for c in message.tool_calls %}...{%- endfor %}'
MISTRAL_REPLIES = [
    '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    'Checking. [TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]',
    '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]b[ARGS]{}',  # the v11+ tokenizers' shape
    '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": ',  # cut off: stays text
    'a [TOOL but no call',
]


def mistral_parse(text: str, cuts: list[int]):
    counter = itertools.count()
    parser = make_parser(MISTRAL_LIKE, lambda: f"c{next(counter):08d}")
    out, calls = [], []
    for a, b in itertools.pairwise([0, *sorted(set(cuts)), len(text)]):
        t, c = parser.feed(text[a:b])
        out.append(t)
        calls += c
    t, c = parser.finish()
    return "".join(out) + t, [(x.id, x.name, json.loads(x.arguments)) for x in calls + c]


def test_mistral_calls_in_both_shapes():
    from chatcli.toolcalls import MISTRAL

    assert detect_format(MISTRAL_LIKE) == MISTRAL
    assert mistral_parse(MISTRAL_REPLIES[0], []) == ("", [("c00000000", "get_weather", {"city": "Paris"})])
    text, calls = mistral_parse(MISTRAL_REPLIES[1], [])
    assert text == "Checking. " and [c[1] for c in calls] == ["a", "b"]
    assert mistral_parse(MISTRAL_REPLIES[2], [])[1] == [("c00000000", "get_weather", {"city": "Paris"}),
                                                         ("c00000001", "b", {})]
    assert mistral_parse(MISTRAL_REPLIES[3], []) == (MISTRAL_REPLIES[3], [])
    assert mistral_parse(MISTRAL_REPLIES[4], []) == (MISTRAL_REPLIES[4], [])


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MISTRAL_REPLIES), st.lists(st.integers(min_value=0, max_value=120), max_size=12))
def test_mistral_any_split_gives_the_same_calls(reply, cuts):
    assert mistral_parse(reply, [c for c in cuts if c <= len(reply)]) == mistral_parse(reply, [])


def test_mistral_ids_are_what_its_templates_accept():
    from chatcli.toolcalls import mistral_ids

    new = mistral_ids()
    ids = {new() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 9 and i.isalnum() for i in ids)


def test_mistral_through_the_backend_stream():
    from chatcli.backends.localtools import with_tool_calls

    out = list(with_tool_calls(iter(chunks_of(MISTRAL_REPLIES[1])), MISTRAL_LIKE, {"a", "b"}))
    assert "".join(c.text for c in out) == "Checking. " and out[-1].finish_reason == "tool_calls"
    assert [d.name for c in out for d in c.tool_calls if d.name] == ["a", "b"]
