"""Thinking over the wire: chatcli serve returns the reasoning apart (message.reasoning_content and .reasoning,
delta.reasoning_content when streamed), takes thinking off through chat_template_kwargs or reasoning_effort, and
the openai backend reads the reasoning back apart from the answer.

The model is the tiny Qwen3 (real Qwen3 tokenizer and chat template, random weights); a logits processor makes it
write `<think>…</think>answer`, as a trained Qwen3 would, through the real local backend and server.
"""

from __future__ import annotations

import httpx
import openai
import pytest
import torch

from chatcli.backends.local import LocalBackend
from chatcli.backends.openai import OpenAIBackend
from chatcli.server import ServerThread
from chatcli.server.protocol import parse_request
from chatcli.types import Message, SamplingParams

REASONING = "The user greets me.\nI should greet back."
ANSWER = "Hello! Paris is in France."
SCRIPT = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"
MESSAGES = [{"role": "user", "content": "Hello world, what is Paris?"}]


class Script:
    """Forces TOKENS one after another, then says the reply is done (as test_processors' Script)."""

    def __init__(self, tokens: list[int]):
        self.tokens, self.heard = list(tokens), []

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(logits, float("-inf"))
        forced[self.tokens[min(len(self.heard), len(self.tokens) - 1)]] = 0.0
        return forced

    def accept(self, token: int) -> None:
        self.heard.append(token)

    def is_done(self) -> bool:
        return len(self.heard) >= len(self.tokens)


class ScriptedLocal(LocalBackend):
    """The real local backend, whose model is made to write SCRIPT (the text a thinking model would write)."""

    script = SCRIPT

    def _generate(self, ids, params, cancel, processors=()):
        forced = Script(self.tokenizer.encode(self.script, add_special_tokens=False))
        return super()._generate(ids, params, cancel, (*processors, forced))


@pytest.fixture(scope="module")
def served(tiny_qwen3_dir):
    backend = ScriptedLocal()
    backend.load(str(tiny_qwen3_dir))
    with ServerThread(backend, "tiny-qwen3") as server:
        yield backend, server


def _extra(obj, key):
    return (obj.model_extra or {}).get(key)


def test_stream_and_non_stream_give_the_same_reasoning_and_content_at_temperature_0(served):
    _, server = served
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    args = dict(model="tiny-qwen3", messages=MESSAGES, temperature=0, max_tokens=200)
    whole = client.chat.completions.create(**args).choices[0]
    assert whole.message.content == ANSWER
    assert _extra(whole.message, "reasoning_content") == REASONING == _extra(whole.message, "reasoning")
    events = [e for e in client.chat.completions.create(**args, stream=True) if e.choices]
    deltas = [e.choices[0].delta for e in events]
    streamed_reasoning = "".join(_extra(d, "reasoning_content") or "" for d in deltas)
    assert streamed_reasoning == REASONING == "".join(_extra(d, "reasoning") or "" for d in deltas)
    assert "".join(d.content or "" for d in deltas) == ANSWER
    assert [e.choices[0].finish_reason for e in events if e.choices[0].finish_reason] == [whole.finish_reason]
    # reasoning arrives first and is never mixed into content
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert all(not _extra(d, "reasoning_content") for d in deltas[first_content:])


@pytest.mark.parametrize("body", [{"chat_template_kwargs": {"enable_thinking": False}}, {"reasoning_effort": "none"}])
def test_thinking_off_over_the_wire_renders_with_enable_thinking_false(served, body):
    backend, server = served
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"messages": MESSAGES, "temperature": 0, "max_tokens": 50, **body}, timeout=60)
    assert r.status_code == 200, r.text
    prompt = backend.tokenizer.decode(list(backend.model.cache.tokens[0]))
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n" in prompt


def test_thinking_stays_on_without_a_switch_or_with_an_effort(served):
    backend, server = served
    for body in ({}, {"reasoning_effort": "high"}, {"chat_template_kwargs": {"enable_thinking": True}}):
        r = httpx.post(server.url + "/v1/chat/completions",
                       json={"messages": MESSAGES, "temperature": 0, "max_tokens": 50, **body}, timeout=60)
        assert r.status_code == 200, r.text
        assert "</think>" not in backend.tokenizer.decode(list(backend.model.cache.tokens[0])).split("<|im_start|>assistant")[-1] \
            .split(REASONING)[0]


@pytest.mark.parametrize("body, param", [
    ({"reasoning_effort": "lots"}, "reasoning_effort"),
    ({"reasoning_effort": 3}, "reasoning_effort"),
    ({"chat_template_kwargs": "no thinking"}, "chat_template_kwargs"),
    ({"chat_template_kwargs": {"enable_thinking": "no"}}, "chat_template_kwargs"),
    ({"messages": [*MESSAGES, {"role": "assistant", "content": "hi", "reasoning_content": 5}]}, "messages[1].reasoning_content"),
])
def test_bad_thinking_options_get_400_naming_the_key(served, body, param):
    _, server = served
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": MESSAGES, **body}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_a_client_may_send_reasoning_back_under_either_name():
    for key in ("reasoning_content", "reasoning"):
        req = parse_request({"messages": [*MESSAGES, {"role": "assistant", "content": "4", key: "2+2"},
                                          {"role": "user", "content": "and 3+3?"}]}, chat=True)
        assert req.messages[1] == Message("assistant", "4", reasoning="2+2")
        assert req.think is None


def test_the_openai_backend_reads_reasoning_apart_from_our_server(served):
    _, server = served
    client = OpenAIBackend(base_url=server.url + "/v1", api_key="none")
    client.load("tiny-qwen3")
    try:
        chunks = list(client.stream_chat([Message("user", MESSAGES[0]["content"])],
                                         SamplingParams(temperature=0, max_tokens=200)))
    finally:
        client.close()
    assert "".join(c.reasoning for c in chunks) == REASONING
    assert "".join(c.text for c in chunks) == ANSWER
    assert chunks[-1].finish_reason == "stop"


def test_the_openai_backend_turns_thinking_off_on_the_server(served):
    backend, server = served
    client = OpenAIBackend(base_url=server.url + "/v1", api_key="none")
    client.load("tiny-qwen3")
    try:
        list(client.stream_chat([Message("user", MESSAGES[0]["content"])], SamplingParams(temperature=0, max_tokens=20),
                                think=False))
    finally:
        client.close()
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n" in backend.tokenizer.decode(list(backend.model.cache.tokens[0]))


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning", "thinking"])
def test_the_openai_backend_reads_each_servers_name_for_reasoning(key):
    """DeepSeek and llama.cpp send reasoning_content, vLLM and LM Studio reasoning, ollama thinking."""
    import json

    from tests.plugins.fault_server import FaultServer, delta, start_sse

    def event(d: dict) -> bytes:
        return f"data: {json.dumps({'id': 'x', 'object': 'chat.completion.chunk', 'created': 0, 'model': 'm', 'choices': [{'index': 0, 'delta': d, 'finish_reason': None}]})}\n\n".encode()

    def handler(conn, i, line, body):
        start_sse(conn)
        conn.sendall(event({key: "let me "}) + event({key: "see"}) + delta("42") + delta(None, "stop") + b"data: [DONE]\n\n")

    with FaultServer(handler) as server:
        client = OpenAIBackend(base_url=server.url, api_key="none", backoff=0.01)
        client.load("m")
        chunks = list(client.stream_chat([Message("user", "?")], SamplingParams(temperature=0, max_tokens=20)))
    assert "".join(c.reasoning for c in chunks) == "let me see"
    assert "".join(c.text for c in chunks) == "42"


def test_the_openai_backends_think_setting_is_the_default_for_each_reply(served):
    """--no-think and /set think off set OpenAIBackend.think, as they set the local backend's."""
    backend, server = served
    client = OpenAIBackend(base_url=server.url + "/v1", api_key="none")
    client.load("tiny-qwen3")
    client.think = False
    try:
        list(client.stream_chat([Message("user", "Say hi")], SamplingParams(temperature=0, max_tokens=20)))
    finally:
        client.close()
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n" in backend.tokenizer.decode(list(backend.model.cache.tokens[0]))
