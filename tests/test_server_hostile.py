"""Hostile clients of `chatcli serve` over real HTTP on 127.0.0.1 (issue 24): numbers that overflow, bodies nested
too deep, models it does not serve, clients that leave mid-body or mid-stream, and connections that never speak."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import pytest

from chatcli.server import ServerThread
from tests.plugins import echo_backend, run_cli

USER = [{"role": "user", "content": "hello there world"}]


@pytest.fixture
def server():
    with ServerThread(echo_backend(delay=0.01), "echo-1", aliases=("gpt-4o",)) as s:
        yield s


def _post(server, body=None, content=None) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, content=content, timeout=10)


@pytest.mark.parametrize("body", [
    {"messages": USER, "seed": 2**70},
    {"messages": USER, "max_tokens": int("9" * 400)},
    {"messages": USER, "max_tokens": 2**40},
])
def test_huge_numbers_are_400(server, body):
    r = _post(server, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_deeply_nested_body_is_400(server):
    r = _post(server, content=b"[" * 200_000)
    assert r.status_code == 400
    assert "nested too deep" in r.json()["error"]["message"]
    assert _post(server, {"messages": USER}).status_code == 200  # the server is fine afterwards


def test_unknown_model_is_404_in_openai_format(server):
    r = _post(server, {"model": "gpt-9-unknown", "messages": USER})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model" and "echo-1" in error["message"]


@pytest.mark.parametrize("name", ["echo-1", "gpt-4o", None])
def test_served_names_answer_with_the_real_name(server, name):
    body = {"messages": USER, **({"model": name} if name else {})}
    assert _post(server, body).json()["model"] == "echo-1"
    streamed = _post(server, {**body, "stream": True}).text
    models = [json.loads(b[6:])["model"] for b in streamed.split("\n\n") if b.startswith("data: {")]
    assert models and set(models) == {"echo-1"}


def _log_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "chatcli.server"]


def _wait_for_line(caplog, n: int) -> list[str]:
    deadline = time.monotonic() + 5
    while len(_log_lines(caplog)) < n:
        assert time.monotonic() < deadline, _log_lines(caplog)
        time.sleep(0.02)
    return _log_lines(caplog)


def test_client_leaving_mid_body_is_logged_499(server, caplog):
    with caplog.at_level(logging.INFO, logger="chatcli.server"):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"messages\"")
        time.sleep(0.2)
        s.close()
        lines = _wait_for_line(caplog, 1)
    assert " 499 " in lines[0] and " 500 " not in lines[0]


def test_client_leaving_mid_stream_is_logged_499(server, caplog):
    raw = json.dumps({"messages": [{"role": "user", "content": "w " * 400}], "stream": True}).encode()
    with caplog.at_level(logging.INFO, logger="chatcli.server"):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(raw) + raw)
        got = b""
        while got.count(b"data: ") < 3:
            got += s.recv(4096)
        s.close()
        lines = _wait_for_line(caplog, 1)
    assert " 499 " in lines[0] and "client-disconnected" in lines[0]


def test_a_connection_that_never_sends_headers_is_closed(monkeypatch):
    from chatcli.server import run

    monkeypatch.setattr(run, "HEADER_TIMEOUT", 0.3)
    with ServerThread(echo_backend(), "echo-1") as server:
        s = socket.create_connection(("127.0.0.1", server.port))
        s.settimeout(5)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # no end of headers, ever
        assert s.recv(1024) == b""  # the server closed it (a timeout here would raise)
        s.close()
        assert _post(server, {"messages": USER}).status_code == 200


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_port_out_of_range_is_exit_2(port):
    r = run_cli("serve", "--port", port, "--model", "no-such-model")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and "--port" in r.stderr
