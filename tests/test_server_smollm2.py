"""Acceptance with the real default model (SmolLM2-135M-Instruct): `chatcli serve` in a subprocess, driven by the
official openai client and by chatcli itself. It stands in for vLLM or llama.cpp's server (same API), which
cannot run here.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.plugins import ServeProcess, run_cli

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def served(smollm2_dir):
    with ServeProcess("--model", str(smollm2_dir)) as server:
        yield server


def test_official_client_stream_equals_whole_and_usage(served):
    client = openai.OpenAI(base_url=served.url, api_key="none")
    model = client.models.list().data[0].id
    args = dict(model=model, messages=QUESTION, temperature=0, seed=42, max_tokens=48)
    whole = client.chat.completions.create(**args)
    events = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert streamed == whole.choices[0].message.content
    assert "Paris" in streamed
    usage = events[-1].usage
    counted = httpx.post(served.url[: -len("/v1")] + "/tokenize", json={"messages": QUESTION}).json()["count"]
    assert whole.usage.prompt_tokens == usage.prompt_tokens == counted
    assert whole.usage.completion_tokens == usage.completion_tokens <= 48
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_chatcli_ask_and_chat_through_serve(served, smollm2_dir):
    common = ("-t", "0", "--max-tokens", "32", "--no-save", "What is the capital of France?")
    remote = run_cli("ask", "--backend", "openai", "--base-url", served.url, "--model", smollm2_dir.name, *common)
    local = run_cli("ask", "--model", str(smollm2_dir), *common)
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    assert remote.stdout == local.stdout and "Paris" in remote.stdout
    chat = run_cli("chat", "--plain", "--no-save", "--backend", "openai", "--base-url", served.url, "--model",
                   smollm2_dir.name, "-t", "0", "--max-tokens", "24",
                   input="Name a colour.\nName another one.\n/stats\n")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.count("tokens · TTFT") == 2 and "replies\t2" in chat.stdout
