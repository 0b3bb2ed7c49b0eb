"""The OpenAI-compatible server over real HTTP on 127.0.0.1, serving the deterministic echo backend.

The echo backend (tests/plugins) is a real Backend whose output is known in advance, so these tests check the HTTP
contract exactly and fast; tests/test_server_local.py runs the same server over the real local engine.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import openai
import pytest

from chatcli.server import ServerThread
from tests.plugins import echo_backend

USER = [{"role": "user", "content": "hello there world"}]


@pytest.fixture
def served():
    """(backend, server) with a fresh echo backend."""
    b = echo_backend()
    with ServerThread(b, "echo-1") as server:
        yield b, server


def post(server, path: str, body, **kw) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=10, **kw)


def events(resp_text: str) -> list:
    """The data: payloads of an SSE body, JSON-decoded except [DONE]."""
    out = []
    for block in resp_text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_official_client_stream_and_whole_agree(served):
    _, server = served
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    whole = client.chat.completions.create(model="echo-1", messages=USER, temperature=0, seed=7)
    stream = client.chat.completions.create(model="echo-1", messages=USER, temperature=0, seed=7, stream=True,
                                            stream_options={"include_usage": True})
    events_ = list(stream)
    text = "".join(e.choices[0].delta.content or "" for e in events_ if e.choices)
    assert text == whole.choices[0].message.content == "echo: hello there world "
    assert whole.choices[0].finish_reason == "stop" and whole.object == "chat.completion"
    assert whole.usage.prompt_tokens == 6 and whole.usage.completion_tokens == 4 and whole.usage.total_tokens == 10
    assert events_[-1].usage.model_dump(exclude_none=True) == whole.usage.model_dump(exclude_none=True)


def test_sse_framing_role_first_finish_usage_done(served):
    _, server = served
    r = post(server, "/v1/chat/completions", {"messages": USER, "stream": True, "max_tokens": 2,
                                               "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    ev = events(r.text)
    assert ev[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [e["choices"][0]["delta"].get("content") for e in ev[1:3]] == ["echo: ", "hello "]
    assert ev[3]["choices"][0]["finish_reason"] == "length"
    assert ev[4]["choices"] == [] and ev[4]["usage"]["completion_tokens"] == 2
    assert ev[5] == "[DONE]" and len(ev) == 6
    assert len({e["id"] for e in ev[:-1]}) == 1


def test_completions_models_health(served):
    _, server = served
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    c = client.completions.create(model="echo-1", prompt="one two three", max_tokens=2)
    assert c.choices[0].text == "one two " and c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 2
    chunks = list(client.completions.create(model="echo-1", prompt="one two", stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == "one two "
    models = client.models.list().data
    assert [m.id for m in models] == ["echo-1"] and models[0].model_extra["max_model_len"] == 512
    assert httpx.get(server.url + "/health").json() == {"status": "ok", "model": "echo-1", "queue": 0}


@pytest.mark.parametrize("body, param, words", [
    ({"temperature": -1}, "temperature", ">= 0"),
    ({"top_p": 0}, "top_p", "(0, 1]"),
    ({"top_p": 1.5}, "top_p", "(0, 1]"),
    ({"top_k": -1}, "top_k", ">= 0"),
    ({"min_p": 2}, "min_p", "[0, 1]"),
    ({"repeat_penalty": 0}, "repeat_penalty", "> 0"),
    ({"max_tokens": 0}, "max_tokens", "in [1, 2^31)"),
    ({"seed": -3}, "seed", "in [0, 2^64)"),
    ({"temperature": "hot"}, "temperature", "a number"),
    ({"n": 2}, "n", "n=1"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
    ({"stream": "yes"}, "stream", "true or false"),
    ({"messages": []}, "messages", "non-empty"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "one of"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content", "text"),
    ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
])
def test_bad_parameters_get_400_in_openai_format(served, body, param, words):
    _, server = served
    r = post(server, "/v1/chat/completions", {"messages": USER, **body})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and words in err["message"]


def test_bad_json_and_oversized_bodies(served):
    _, server = served
    r = httpx.post(server.url + "/v1/chat/completions", content=b'{"messages": [', timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    big = {"messages": [{"role": "user", "content": "x" * (1 << 20)}]}
    r = post(server, "/v1/chat/completions", big)
    assert r.status_code == 413 and "1 MiB" in r.json()["error"]["message"]


def test_prompt_over_context_names_both_sizes(served):
    _, server = served
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "w " * 600}]})
    assert r.status_code == 400
    assert "603 tokens" in r.json()["error"]["message"] and "512 tokens" in r.json()["error"]["message"]


def test_bearer_key_required_when_set():
    with ServerThread(echo_backend(), "echo-1", api_key="s3cret") as server:
        assert post(server, "/v1/chat/completions", {"messages": USER}).status_code == 401
        wrong = post(server, "/v1/chat/completions", {"messages": USER}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(server.url + "/v1/models").status_code == 401
        assert httpx.get(server.url + "/health").status_code == 200
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret")
        assert client.chat.completions.create(model="echo-1", messages=USER).choices[0].message.content


def _stream_in_thread(server, content: str, results: list, i: int) -> threading.Thread:
    def go():
        r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": content}], "stream": True})
        results[i] = r.status_code

    t = threading.Thread(target=go)
    t.start()
    return t


def _wait_depth(server, depth: int) -> None:
    deadline = time.monotonic() + 5
    while httpx.get(server.url + "/health").json()["queue"] < depth:
        assert time.monotonic() < deadline, f"queue never reached {depth}"
        time.sleep(0.01)


def test_requests_run_one_at_a_time_in_arrival_order():
    b = echo_backend(delay=0.02)
    with ServerThread(b, "echo-1", max_queue=8) as server:
        results = [None] * 4
        threads = []
        for i, word in enumerate(["first", "second", "third", "fourth"]):
            # the first is long, so the others are all in line while it runs
            threads.append(_stream_in_thread(server, f"{word} " + "w " * (100 if i == 0 else 3), results, i))
            _wait_depth(server, i + 1)  # each is in line before the next is sent
        for t in threads:
            t.join(20)
    assert results == [200] * 4
    assert b.started == ["first", "second", "third", "fourth"]


def test_queue_too_long_gets_503_with_retry_after():
    b = echo_backend(delay=0.02)
    with ServerThread(b, "echo-1", max_queue=1) as server:
        results = [None] * 2
        threads = [_stream_in_thread(server, "w " * 30, results, 0)]
        _wait_depth(server, 1)
        threads.append(_stream_in_thread(server, "w " * 30, results, 1))
        _wait_depth(server, 2)
        r = post(server, "/v1/chat/completions", {"messages": USER})
        for t in threads:
            t.join(20)
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["type"] == "server_busy"
    assert results == [200, 200]


def _raw_request(port: int, body: dict) -> socket.socket:
    raw = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(raw) + raw)
    return s


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_stops_generation(stream):
    b = echo_backend(delay=0.02)
    with ServerThread(b, "echo-1") as server:
        s = _raw_request(server.port, {"messages": [{"role": "user", "content": "w " * 400}], "stream": stream})
        if stream:
            got = b""
            while b"data: " not in got:  # it has started streaming
                got += s.recv(4096)
        else:
            time.sleep(0.3)
        s.close()
        deadline = time.monotonic() + 3
        while not b.finished:
            assert time.monotonic() < deadline, "generation did not stop after the client left"
            time.sleep(0.02)
        assert b.finished == ["interrupted"]
        # the engine is free again at once
        r = post(server, "/v1/chat/completions", {"messages": USER})
        assert r.json()["choices"][0]["message"]["content"] == "echo: hello there world "


def test_access_log_line_per_request(served, caplog):
    _, server = served
    with caplog.at_level(logging.INFO, logger="chatcli.server"):
        post(server, "/v1/chat/completions", {"messages": USER, "stream": True})
        post(server, "/v1/chat/completions", {"messages": USER, "top_p": 7})
    lines = [r.getMessage() for r in caplog.records if r.name == "chatcli.server"]
    assert len(lines) == 2
    assert "/v1/chat/completions 200 prompt=6 cached=0 completion=4 ttft=" in lines[0] and "tok/s=" in lines[0]
    assert " 400 " in lines[1]


def test_serve_on_a_busy_port_fails_before_loading_anything():
    from tests.plugins import run_cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run_cli("serve", "--port", str(port), "--model", "no-such-model")
    assert r.returncode == 2
    assert r.stderr.startswith(f"chatcli: error: cannot listen on 127.0.0.1:{port}")
    assert "--port" in r.stderr


def test_backend_failure_before_and_after_the_first_token(served):
    from chatcli.backends.openai import OpenAIBackend
    from chatcli.errors import BackendError
    from chatcli.types import Message, SamplingParams

    _, server = served
    # completions have no "echo:" prefix, so EXPLODE first fails before any token: a real status code
    r = post(server, "/v1/completions", {"prompt": "EXPLODE now", "stream": True})
    assert r.status_code == 500 and "exploded after 0 words" in r.json()["error"]["message"]
    # after tokens the headers are gone: an error event, which the client reports with the partial text kept
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "one two EXPLODE"}], "stream": True})
    ev = events(r.text)
    assert r.status_code == 200 and "exploded after 3 words" in ev[-1]["error"]["message"] and "[DONE]" not in ev
    b = OpenAIBackend(base_url=server.url + "/v1")
    b.load("echo-1")
    text = ""
    with pytest.raises(BackendError, match="exploded after 3 words") as err:
        for chunk in b.stream_chat([Message("user", "one two EXPLODE")], SamplingParams()):
            text += chunk.text
    assert text == "echo: one two " == err.value.partial_text


def test_backend_notices_go_to_the_server_log_not_the_client(caplog):
    """A notice on a chunk (say, the compiled step took over) is for whoever runs the server: one log line."""
    from chatcli.server.app import _logging_notices
    from chatcli.types import Chunk, Notice

    chunks = [Chunk("a", notices=(Notice("info", "the compiled decode step is in use from this reply on"),)), Chunk("b")]
    told: set = set()
    with caplog.at_level("INFO", logger="chatcli.server"):
        assert [c.text for c in _logging_notices(iter(chunks), told)] == ["a", "b"]
        assert [c.text for c in _logging_notices(iter(chunks), told)] == ["a", "b"]  # the second time: not again
    assert [r.getMessage() for r in caplog.records] == ["chatcli serve: the compiled decode step is in use from this reply on"]
