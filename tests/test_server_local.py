"""Acceptance: chatcli's server over the real local engine (a tiny random Llama), driven by the official openai
client and by chatcli itself through the openai backend. It stands in for vLLM or llama.cpp's server, which speak
the same API and cannot run here.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from chatcli.backends.local import LocalBackend
from chatcli.server import ServerThread
from chatcli.types import Message
from tests.plugins import ServeProcess, run_cli

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello world, what is Paris?"}]


@pytest.fixture(scope="module")
def local_server(tiny_llama_dir):
    backend = LocalBackend()
    backend.load(str(tiny_llama_dir))
    with ServerThread(backend, "tiny-llama") as server:
        yield backend, server


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_stream_equals_whole_with_a_fixed_seed_and_usage_is_right(local_server, temperature):
    backend, server = local_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    args = dict(model="tiny-llama", messages=MESSAGES, temperature=temperature, seed=1234, max_tokens=24)
    whole = client.chat.completions.create(**args)
    events = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert streamed == whole.choices[0].message.content and streamed
    finish = [e.choices[0].finish_reason for e in events if e.choices and e.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    prompt = backend.count_tokens([Message(m["role"], m["content"]) for m in MESSAGES])
    assert whole.usage.prompt_tokens == prompt and events[-1].usage.prompt_tokens == prompt
    assert whole.usage.completion_tokens == events[-1].usage.completion_tokens
    assert 1 <= whole.usage.completion_tokens <= 24
    if whole.choices[0].finish_reason == "length":
        assert whole.usage.completion_tokens == 24


def test_raw_completions_and_context_overflow(local_server):
    backend, server = local_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    c = client.completions.create(model="tiny-llama", prompt="The quick brown fox", max_tokens=5, temperature=0)
    assert c.usage.completion_tokens == 5 and c.choices[0].finish_reason == "length"
    assert c.usage.prompt_tokens == len(backend.tokenizer.encode("The quick brown fox", add_special_tokens=True))
    long = [{"role": "user", "content": "Paris " * 400}]
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": long}, timeout=30)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert f"context is {backend.context_length()} tokens" in message and "the prompt is" in message
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "Paris " * 400}, timeout=30)
    assert r.status_code == 400 and str(backend.context_length()) in r.json()["error"]["message"]


def test_disconnect_cancels_the_local_engine(local_server):
    backend, server = local_server
    body = json.dumps({"messages": MESSAGES, "stream": True, "max_tokens": 200, "temperature": 0.7}).encode()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    got = b""
    while got.count(b"data: ") < 3:
        got += s.recv(4096)
    s.close()
    deadline = time.monotonic() + 5
    while httpx.get(server.url + "/health").json()["queue"]:
        assert time.monotonic() < deadline, "the engine kept generating for a client that left"
        time.sleep(0.02)
    assert not backend.lock.locked()


@pytest.fixture(scope="module")
def served_tiny(tiny_llama_dir):
    with ServeProcess("--model", str(tiny_llama_dir)) as server:
        yield server


def test_chatcli_ask_through_serve_matches_local(served_tiny, tiny_llama_dir):
    common = ("-t", "0", "--max-tokens", "12", "--no-save", "What is the capital of France?")
    remote = run_cli("ask", "--backend", "openai", "--base-url", served_tiny.url, "--model", "tiny-llama", *common)
    local = run_cli("ask", "--model", str(tiny_llama_dir), *common)
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    assert remote.stdout == local.stdout and remote.stdout.strip()
    # the server wrote an access log line for it
    assert any("/v1/chat/completions 200" in line and "ttft=" in line for line in served_tiny.log)


def test_scripted_chat_through_serve(served_tiny):
    r = run_cli("chat", "--plain", "--no-save", "--backend", "openai", "--base-url", served_tiny.url, "--model",
                "tiny-llama", "-t", "0", "--max-tokens", "8", input="Hello there\nAnd again\n/stats\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("tokens · TTFT") == 2 and "replies\t2" in r.stdout
    assert "\x1b" not in r.stdout


def test_a_template_that_refuses_the_messages_is_a_400(tiny_llama_dir, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_llama_dir, tmp_path / "refusing")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    backend = LocalBackend()
    backend.load(str(folder))
    with ServerThread(backend, "refusing") as server:
        r = httpx.post(server.url + "/v1/chat/completions", json={"messages": MESSAGES}, timeout=30)
    assert r.status_code == 400 and "roles must alternate" in r.json()["error"]["message"]


def test_serve_stops_cleanly_on_ctrl_c(served_tiny):
    assert httpx.get(served_tiny.url[: -len("/v1")] + "/health").json()["status"] == "ok"
    assert served_tiny.stop() == 0
    assert not any("Traceback" in line for line in served_tiny.log)
