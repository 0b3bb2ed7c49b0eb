"""`chatcli ask` through the openai backend, end to end in a subprocess: a profile, and each fault ending in exit 4."""

from __future__ import annotations

import socket

import pytest

from chatcli.server import ServerThread
from tests.plugins import echo_backend, run_cli
from tests.plugins.fault_server import FaultServer, delta, respond, stall, start_sse


@pytest.fixture(scope="module")
def echo_server():
    with ServerThread(echo_backend(), "echo-1") as server:
        yield server


def test_ask_through_a_config_profile(echo_server, _isolated_home):
    (_isolated_home / "config.toml").write_text(f'[backends.box]\nbase_url = "{echo_server.url}/v1"\nmodel = "echo-1"\n')
    r = run_cli("ask", "--backend", "box", "-t", "0", "ping", "pong")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "echo: ping pong \n"


def test_server_down_exits_4():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    r = run_cli("ask", "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "hello")
    assert r.returncode == 4 and r.stdout.strip() == ""
    assert r.stderr.startswith("chatcli: error: cannot reach http://127.0.0.1:") and "Traceback" not in r.stderr


def test_stall_keeps_the_partial_reply_and_exits_4(_isolated_home):
    def handler(conn, i, line, body):
        if line.startswith("POST /v1/chat"):
            start_sse(conn)
            conn.sendall(delta("The answer is") + delta(" forty"))
            stall(5)
        else:  # /tokenize, /v1/models: not offered
            respond(conn, 404, {"error": {"message": "not here"}})

    (_isolated_home / "config.toml").write_text("[backends.openai]\nread_timeout = 1\n")
    with FaultServer(handler) as server:
        r = run_cli("ask", "--backend", "openai", "--base-url", server.url, "--no-save", "question")
    assert r.returncode == 4
    assert "The answer is forty" in r.stdout
    assert "read timeout" in r.stderr and "partial reply" in r.stderr


def test_malformed_sse_keeps_the_partial_reply_and_exits_4():
    def handler(conn, i, line, body):
        if not line.startswith("POST /v1/chat"):
            return respond(conn, 404, {"error": {"message": "not here"}})
        start_sse(conn)
        conn.sendall(delta("partial") + b"data: {{{\n\n")

    with FaultServer(handler) as server:
        r = run_cli("ask", "--backend", "openai", "--base-url", server.url, "hello")
    assert r.returncode == 4 and "partial" in r.stdout and "malformed" in r.stderr


@pytest.mark.parametrize("status", [500, 429])
def test_http_errors_exit_4_with_status_and_message_and_no_key(status, _isolated_home):
    def handler(conn, i, line, body):
        respond(conn, status, {"error": {"message": "upstream says no (key sk-CLI-SECRET-99)"}}, {"Retry-After": "0"})

    (_isolated_home / "config.toml").write_text("[backends.openai]\nretries = 1\nbackoff = 0.01\n")
    with FaultServer(handler) as server:
        r = run_cli("ask", "--backend", "openai", "--base-url", server.url, "--api-key", "sk-CLI-SECRET-99", "hi")
        chats = [line for line in server.requests if line.startswith("POST /v1/chat")]
    assert r.returncode == 4
    assert f"HTTP {status}" in r.stderr and "upstream says no" in r.stderr
    assert "SECRET" not in r.stdout + r.stderr
    assert len(chats) == 2  # one retry, as configured
