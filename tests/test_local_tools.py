"""The local backend with tools: the real Qwen2.5-Coder-0.5B at temperature 0 calls get_weather for Paris."""

from __future__ import annotations

import json

import torch

from chatcli.backends.local import LocalBackend
from chatcli.types import Message, SamplingParams
from tests.test_templates_tools import WEATHER

QUESTION = [Message("user", "What is the weather in Paris?")]


def test_qwen_calls_get_weather_for_paris(qwen_dir):
    torch.set_num_threads(1)
    backend = LocalBackend(dtype="float32")
    backend.load(str(qwen_dir))
    params = SamplingParams(temperature=0.0, max_tokens=60)
    chunks = list(backend.stream_chat(QUESTION, params, tools=[WEATHER]))
    deltas = [d for c in chunks for d in c.tool_calls]
    assert chunks[-1].finish_reason == "tool_calls"
    assert deltas[0].index == 0 and deltas[0].id and deltas[0].name == "get_weather" and deltas[0].arguments == ""
    args = "".join(d.arguments for d in deltas if d.index == 0)
    assert json.loads(args) == {"city": "Paris"}
    assert "<tool_call>" not in "".join(c.text for c in chunks)
    # Without tools the same backend answers in text, with no tool-call deltas.
    plain = list(backend.stream_chat(QUESTION, params.with_(max_tokens=8)))
    assert not any(c.tool_calls for c in plain) and plain[-1].finish_reason != "tool_calls"
