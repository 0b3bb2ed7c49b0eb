"""The openai backend against hostile servers (issue 24: 6, 12, 15), through the real CLI in a subprocess.

Each server here is a stand-in for a misbehaving remote server: a raw socket on 127.0.0.1 (tests.plugins.fault_server)
that sends what no real OpenAI-compatible server should. Each case ends with its exit code, one line on stderr and no
traceback, and leaves the saved history as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from chatcli.backends.openai import OpenAIBackend
from chatcli.errors import BackendError
from chatcli.types import Message, SamplingParams
from tests.plugins import run_cli
from tests.plugins.fault_server import FaultServer, delta, respond, start_sse


def one_line(r, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr[-2000:]
    return r.stderr


def ask(server: FaultServer, *args: str, timeout: float = 20):
    return run_cli("ask", "--backend", "openai", "--base-url", server.url, "--model", "m", *args, "hi",
                   timeout=timeout)


def history() -> list:
    listed = run_cli("history", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def _measured_ask(server: FaultServer, tmp_path) -> tuple[subprocess.CompletedProcess, int]:
    """`ask` against SERVER and its own peak RSS in KB: a wrapper process whose only child is the CLI reports it, as
    this process's RUSAGE_CHILDREN is the largest of every child the test run has started."""
    from tests.plugins import CHATCLI

    cmd = [str(CHATCLI)] if CHATCLI.exists() else [sys.executable, "-m", "chatcli"]
    peak = tmp_path / "peak"
    wrapper = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:]).returncode; "
               "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", wrapper, str(peak), *cmd, "ask", "--backend", "openai", "--base-url", server.url,
                        "--model", "m", "hi"], capture_output=True, text=True, timeout=20, env={**os.environ, "NO_COLOR": "1"})
    return r, int(peak.read_text())


def test_an_endless_line_is_cut_in_bounded_memory(tmp_path):
    def handler(conn, i, line, body):
        if _no_side_routes(conn, line):
            return
        start_sse(conn)
        try:
            while True:  # "data: xxxx..." and never a newline
                conn.sendall(b"data: " + b"x" * (1 << 16))
        except OSError:
            pass  # the client hung up, as it should

    with FaultServer(handler) as server:
        t0 = time.monotonic()
        r, peak_kb = _measured_ask(server, tmp_path)
        assert any("chat/completions" in line for line in server.requests)
    assert time.monotonic() - t0 < 10
    line = one_line(r, 4)
    assert server.url in line and "line over 1 MiB without a newline" in line
    assert peak_kb < 600 << 10  # the issue saw 2.5 GB
    assert history() == []


def test_an_endless_event_and_an_endless_body_are_cut():
    def endless_event(conn, i, line, body):
        if _no_side_routes(conn, line):
            return
        start_sse(conn)
        try:
            while True:  # short lines, but never the blank line that ends the event
                conn.sendall(b"data: " + b"y" * 1000 + b"\n")
        except OSError:
            pass

    with FaultServer(endless_event) as server:
        line = one_line(ask(server), 4)
    assert "a server-sent event over 4 MiB" in line

    def endless_json(conn, i, line, body):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[")
        try:
            while True:
                conn.sendall(b"1," * 50000)
        except OSError:
            pass

    with FaultServer(endless_json) as server:
        line = one_line(ask(server), 4)
    assert f"{server.url} sent an answer over 16 MiB" in line
    assert history() == []


def test_a_server_that_ignores_max_tokens_is_stopped():
    def handler(conn, i, line, body):
        if _no_side_routes(conn, line):
            return
        assert json.loads(body)["max_tokens"] == 5
        start_sse(conn)
        try:
            while True:
                conn.sendall(delta("tok"))
                time.sleep(0.001)
        except OSError:
            pass

    with FaultServer(handler) as server:
        r = ask(server, "--max-tokens", "5", "--no-save")
        assert any("chat/completions" in line for line in server.requests)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "tok" * 5 and "Traceback" not in r.stderr


def _no_side_routes(conn, line: str) -> bool:
    """Answer /models and /tokenize 404, as servers without them do, so that the case reaches the chat stream."""
    if "/models" in line or "/tokenize" in line:
        respond(conn, 404, {"error": {"message": "no such route"}})
        return True
    return False


def _event(body: object) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


@pytest.mark.parametrize(("event", "words"), [
    ([1, 2, 3], "an event is a JSON list"),
    ({"id": "x", "object": "chat.completion.chunk"}, "an event has no 'choices'"),
    ({"choices": {"0": "a"}}, "'choices' is a dict, not a list"),
    ({"choices": [7]}, "a choice is int, not an object"),
    ({"choices": [{"index": 0, "delta": {"content": 42}}]}, "its text is int, not a string"),
    ({"choices": [{"index": 0, "delta": "hello"}]}, "a delta is str, not an object"),
    ({"choices": [], "usage": {"prompt_tokens": "many"}}, "'usage' lacks integer"),
])
def test_wrong_shape_chat_events_are_exit_4(event, words):
    def handler(conn, i, line, body):
        if _no_side_routes(conn, line):
            return
        start_sse(conn)
        conn.sendall(_event(event))

    with FaultServer(handler) as server:
        line = one_line(ask(server), 4)
    assert server.url in line and "wrong shape" in line and words in line
    assert history() == []


@pytest.mark.parametrize(("body", "words"), [
    ([1, 2, 3], '/models is not {"data": [a list of models]}'),
    ({"object": "list", "data": [1, 2]}, "/models lists entries without a string 'id'"),
    ({"object": "list", "data": [{"id": 5}]}, "/models lists entries without a string 'id'"),
])
def test_wrong_shape_models_answers_are_exit_4(body, words):
    def handler(conn, i, line, _):
        respond(conn, 200, json.dumps(body))  # every route: ask asks /models first, for the context length

    with FaultServer(handler) as server:
        line = one_line(ask(server), 4)
        with pytest.raises(BackendError, match="wrong shape") as err:
            backend = OpenAIBackend(base_url=server.url)
            backend.models()  # what the REPL's /model completion calls
    assert server.url in line and "wrong shape" in line and words in line
    assert words in str(err.value)
    assert history() == []


@pytest.mark.parametrize("status", [200, 404])
def test_an_html_page_is_named_as_such(status):
    page = "<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"

    def handler(conn, i, line, body):
        conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: text/html; charset=utf-8\r\n"
                     f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n{page}".encode())

    with FaultServer(handler) as server:
        line = one_line(ask(server), 4)
        with pytest.raises(BackendError) as err:
            OpenAIBackend(base_url=server.url).models()
    expected = f"{server.url} answered an HTML page, not the OpenAI API; check --base-url"
    assert expected in line and str(err.value) == expected
    assert history() == []


def test_a_server_that_never_answers_costs_the_timeout_the_message_names(tmp_path, monkeypatch):
    import os

    config = os.environ["CHATCLI_CONFIG"]
    with open(config, "a") as f:
        f.write("\n[backends.openai]\nread_timeout = 1.5\n")

    def handler(conn, i, line, body):
        time.sleep(30)  # accepts, reads the request, never answers

    with FaultServer(handler) as server:
        t0 = time.monotonic()
        r = ask(server, timeout=40)
        took = time.monotonic() - t0
    line = one_line(r, 4)
    assert "1.5s" in line and "read timeout" in line
    assert took < 1.5 + 2.5, took  # the interpreter's start-up is the slack
    assert history() == []


def test_a_silent_chat_endpoint_costs_one_read_timeout():
    """/models and /tokenize missing, the chat request never answered: no retry stacks a second wait on the first."""
    def handler(conn, i, line, body):
        if not _no_side_routes(conn, line):
            time.sleep(10)

    with FaultServer(handler) as server:
        backend = OpenAIBackend(base_url=server.url, read_timeout=1.0)
        backend.load("m")
        t0 = time.monotonic()
        with pytest.raises(BackendError, match="nothing for 1s") as err:
            list(backend.stream_chat([Message("user", "hi")], SamplingParams(max_tokens=5)))
        took = time.monotonic() - t0
        chats = [line for line in server.requests if "chat/completions" in line]
    assert took < 1.0 + 0.8, took
    assert len(chats) == 1 and err.value.exit_code == 4
