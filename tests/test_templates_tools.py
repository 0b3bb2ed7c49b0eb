"""Tool calling in chat templates: tools, assistant tool_calls and tool results render as transformers renders them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chatcli.templates import render_chat
from chatcli.types import Message, ToolCall

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                   "required": ["city"]}}}
CONVO = [
    Message("system", "You help with weather."),
    Message("user", "What is the weather in Paris and in Rome?"),
    Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
                                         ToolCall("call_2", "get_weather", '{"city": "Rome"}'))),
    Message("tool", '{"temp": 21}', tool_call_id="call_1"),
    Message("tool", '{"temp": 25}', tool_call_id="call_2"),
    Message("assistant", "Paris is 21 and Rome is 25 degrees."),
    Message("user", "Thanks!"),
]


def message_as_client_sends(m: Message) -> dict:
    """M as an OpenAI-style client hands it to transformers (arguments as a dict)."""
    d = {"role": m.role, "content": m.content}
    if m.tool_calls:
        d["tool_calls"] = [{"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": json.loads(c.arguments)}} for c in m.tool_calls]
    if m.tool_call_id:
        d["tool_call_id"] = m.tool_call_id
    return d


def hf_messages() -> list[dict]:
    """CONVO as an OpenAI-style client hands it to transformers."""
    return [message_as_client_sends(m) for m in CONVO]


def qwen_folder() -> Path:
    root = Path(os.environ.get("CHATCLI_TEST_MODELS") or Path(__file__).resolve().parent.parent / "models")
    root = root.parent if root.is_file() else root  # the variable may name tokenizer_config.json itself
    folder = root if (root / "tokenizer_config.json").is_file() else root / "qwen2.5-coder-0.5b-instruct"
    if not (folder / "tokenizer_config.json").is_file():
        pytest.skip(f"no pulled Qwen2.5-Coder in {root} (set CHATCLI_TEST_MODELS)")
    return folder


def test_qwen_tools_render_as_transformers():
    transformers = pytest.importorskip("transformers")
    folder = qwen_folder()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    template = json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
    for convo, hf in ((CONVO, hf_messages()), (CONVO[:2], hf_messages()[:2])):
        want = tok.apply_chat_template(hf, tools=[WEATHER], tokenize=False, add_generation_prompt=True)
        got = render_chat(template, convo, bos_token=tok.bos_token, eos_token=tok.eos_token, tools=[WEATHER]).text
        assert got == want
        assert "<tools>" in got and '"get_weather"' in got
        if len(convo) > 2:
            assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>' in got
            assert "<tool_response>\n{\"temp\": 25}\n</tool_response>" in got
    # Without tools the template renders as before: no tool preamble.
    plain = render_chat(template, CONVO[:2]).text
    assert plain == tok.apply_chat_template(hf_messages()[:2], tokenize=False, add_generation_prompt=True)
    assert "<tools>" not in plain


def test_arguments_that_are_not_an_object_stay_text():
    tmpl = "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments is mapping }}|" \
           "{{ c.function.arguments }};{% endfor %}{% endfor %}"
    convo = [Message("assistant", "", tool_calls=(ToolCall("a", "f", '{"x": 1}'), ToolCall("b", "f", "not json")))]
    assert render_chat(tmpl, convo, add_generation_prompt=False).text == "True|{'x': 1};False|not json;"


# Llama 3.2 Instruct's chat template as published with meta-llama/Llama-3.2-1B-Instruct (tests/data keeps a copy;
# the text here was taken from a public mirror of it). It takes one tool call per assistant message and writes
# today's date through strftime_now.
LLAMA32 = Path(__file__).resolve().parent / "data" / "llama3.2_chat_template.jinja"


def llama_convo() -> list[Message]:
    return [CONVO[0], CONVO[1], Message("assistant", "", tool_calls=(CONVO[2].tool_calls[0],)), CONVO[3],
            Message("assistant", "Paris is 21 degrees."), CONVO[6]]


def test_llama32_tools_render_as_transformers():
    from transformers.utils.chat_template_utils import render_jinja_template

    template = LLAMA32.read_text()
    convo = llama_convo()
    hf = [message_as_client_sends(m) for m in convo]
    for n in (2, len(convo)):
        (want,), _ = render_jinja_template([hf[:n]], tools=[WEATHER], chat_template=template,
                                           add_generation_prompt=True, bos_token="<|begin_of_text|>")
        got = render_chat(template, convo[:n], bos_token="<|begin_of_text|>", tools=[WEATHER]).text
        assert got == want
        assert "Environment: ipython" in got and '"name": "get_weather"' in got
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>' in got
    # A string result is "iterable" to this template, so it goes through tojson (quoted), as transformers renders it.
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"{\\"temp\\": 21}"<|eot_id|>' in got


def test_llama32_template_teaches_the_llama3_call_format():
    from chatcli.toolcalls import LLAMA3, detect_format

    assert detect_format(LLAMA32.read_text()) == LLAMA3


def test_qwen3_tools_render_as_transformers():
    """Qwen3's real template (tests/data, see tests/tinymodels.py for its source) with tools, two calls and their
    results in the history, with and without thinking, equals transformers' rendering."""
    from transformers.utils.chat_template_utils import render_jinja_template

    template = (Path(__file__).resolve().parent / "data" / "qwen3_chat_template.jinja").read_text()
    for n in (2, len(CONVO)):
        for kwargs in ({}, {"enable_thinking": False}):
            (want,), _ = render_jinja_template([hf_messages()[:n]], tools=[WEATHER], chat_template=template,
                                               add_generation_prompt=True, **kwargs)
            got = render_chat(template, CONVO[:n], tools=[WEATHER], template_kwargs=kwargs).text
            assert got == want
    assert "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>" in got
    assert "<tool_response>\n{\"temp\": 25}\n</tool_response>" in got
