"""The openai backend against real HTTP on 127.0.0.1: chatcli's own server, and scripted raw-socket servers that fail."""

from __future__ import annotations

import socket
import time

import pytest

from chatcli.backends.openai import OpenAIBackend
from chatcli.errors import BackendError
from chatcli.server import ServerThread
from chatcli.types import Message, SamplingParams
from tests.plugins import echo_backend
from tests.plugins.fault_server import FaultServer, delta, respond, stall, start_sse

HELLO = [Message("system", "be brief"), Message("user", "hello there world")]
GREEDY = SamplingParams(temperature=0.0, max_tokens=50)


def backend(url: str, **kwargs) -> OpenAIBackend:
    b = OpenAIBackend(base_url=url, api_key="sk-test-SECRET-1234", backoff=0.01, **kwargs)
    b.load("echo-1")  # the name chatcli serve serves in these tests; fault servers take any
    return b


def drain(b: OpenAIBackend, messages=HELLO, params=GREEDY, cancel=None):
    """Collect the text; on BackendError return what arrived before it and the error."""
    text, last = "", None
    try:
        for chunk in b.stream_chat(messages, params, cancel=cancel):
            text += chunk.text
            last = chunk
    except BackendError as e:
        return text, last, e
    return text, last, None


@pytest.fixture
def echo_server():
    with ServerThread(echo_backend(), "echo-1") as server:
        yield server


def test_streams_from_chatcli_serve_with_exact_counts(echo_server):
    b = backend(echo_server.url + "/v1")
    text, last, err = drain(b)
    assert err is None and text == "echo: hello there world "
    assert last.finish_reason == "stop"
    assert last.stats.completion_tokens == 4 and last.stats.prompt_tokens == 11 and not last.stats.estimated
    assert b.count_tokens(HELLO) == 11 and not b.tokens_estimated  # the server's /tokenize
    assert b.context_length() == 512 and b.models() == ["echo-1"]
    pieces = [c.text for c in b.stream_completion("one two", GREEDY)]
    assert "".join(pieces) == "one two "


def test_max_tokens_and_stop_reach_the_server(echo_server):
    b = backend(echo_server.url + "/v1")
    text, last, _ = drain(b, params=SamplingParams(temperature=0, max_tokens=2))
    assert (text, last.finish_reason) == ("echo: hello ", "length")
    assert not last.stats.estimated  # our own max_tokens cap still reads the usage of a server that honours it
    text, last, _ = drain(b, params=SamplingParams(temperature=0, stop=("there",), top_k=5, repeat_penalty=1.1))
    assert (text, last.finish_reason) == ("echo: hello ", "stop")


def test_cancel_ends_with_interrupted(echo_server):
    import threading

    cancel = threading.Event()
    b = backend(echo_server.url + "/v1")
    pieces = []
    for chunk in b.stream_chat([Message("user", "w " * 200)], GREEDY, cancel=cancel):
        pieces.append(chunk)
        if len(pieces) == 3:
            cancel.set()
    assert pieces[-1].finish_reason == "interrupted" and len(pieces) == 4


def test_server_down_is_a_backend_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    text, _, err = drain(backend(f"http://127.0.0.1:{port}/v1"))
    assert text == "" and err.exit_code == 4
    assert f"127.0.0.1:{port}" in str(err) and "is the server running" in str(err)


def test_stall_mid_stream_keeps_the_partial_reply():
    def handler(conn, i, line, body):
        start_sse(conn)
        conn.sendall(delta("Hello") + delta(" wor"))
        stall(3)

    with FaultServer(handler) as server:
        t0 = time.monotonic()
        text, _, err = drain(backend(server.url, read_timeout=0.5))
    assert text == "Hello wor" and err.partial_text == "Hello wor"
    assert "read timeout" in str(err) and "partial reply" in str(err)
    assert time.monotonic() - t0 < 2.5
    assert len(server.requests) == 1  # a timeout after tokens is never retried


def test_malformed_sse_keeps_the_partial_reply():
    def handler(conn, i, line, body):
        start_sse(conn)
        conn.sendall(delta("Bon") + delta("jour") + b"data: {this is not json\n\n")

    with FaultServer(handler) as server:
        text, _, err = drain(backend(server.url))
    assert text == "Bonjour" and "malformed" in str(err) and err.exit_code == 4


def test_stream_cut_before_finish_is_an_error():
    def handler(conn, i, line, body):
        start_sse(conn)
        conn.sendall(delta("half a"))  # then the connection closes: no finish_reason, no [DONE]

    with FaultServer(handler) as server:
        text, _, err = drain(backend(server.url))
    assert text == "half a" and "ended before the reply was finished" in str(err)


def test_error_event_mid_stream_names_the_server_message():
    def handler(conn, i, line, body):
        start_sse(conn)
        conn.sendall(delta("so far") + b'data: {"error": {"message": "engine crashed", "type": "server_error"}}\n\n')

    with FaultServer(handler) as server:
        text, _, err = drain(backend(server.url))
    assert text == "so far" and "engine crashed" in str(err)


@pytest.mark.parametrize("status", [500, 429])
def test_retried_before_any_token_then_succeeds(status):
    def handler(conn, i, line, body):
        if i < 2:
            respond(conn, status, {"error": {"message": "try later", "type": "x"}}, {"Retry-After": "0"})
            return
        start_sse(conn)
        conn.sendall(delta("ok") + delta(None, "stop") + b"data: [DONE]\n\n")

    with FaultServer(handler) as server:
        text, last, err = drain(backend(server.url, retries=2))
    assert err is None and text == "ok" and last.finish_reason == "stop"
    assert len(server.requests) == 3
    assert last.stats.estimated  # no usage in this stream: counts are estimates, and say so


@pytest.mark.parametrize("status", [500, 429, 503])
def test_persistent_errors_give_status_and_server_message(status):
    def handler(conn, i, line, body):
        respond(conn, status, {"error": {"message": f"overloaded #{i}", "type": "x"}})

    with FaultServer(handler) as server:
        text, _, err = drain(backend(server.url, retries=1))
    assert text == "" and err.exit_code == 4
    assert f"HTTP {status}" in str(err) and "overloaded #1" in str(err) and "gave up after 1 retries" in str(err)
    assert len(server.requests) == 2


def test_client_errors_are_not_retried_and_the_key_is_never_shown():
    def handler(conn, i, line, body):  # a server that echoes the key it was sent (some proxies do)
        respond(conn, 401, {"error": {"message": "bad key sk-test-SECRET-1234", "type": "auth"}})

    with FaultServer(handler) as server:
        b = backend(server.url)
        _, _, err = drain(b)
    assert len(server.requests) == 1
    assert "HTTP 401" in str(err) and "--api-key" in str(err)
    assert "SECRET" not in str(err) and "SECRET" not in repr(b)


def test_count_tokens_falls_back_to_an_estimate():
    def handler(conn, i, line, body):
        respond(conn, 404, {"error": {"message": "no such route"}})

    with FaultServer(handler) as server:
        b = backend(server.url)
        n = b.count_tokens([Message("user", "x" * 400)])
        assert b.tokens_estimated and n == 104  # 400 chars / 4 + 4 for the role markers
        assert b.context_length() == 4096  # the server could not say; the documented default


def test_profile_settings_override_defaults(monkeypatch):
    monkeypatch.setenv("CHATCLI_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    b = OpenAIBackend()
    assert b.base_url == "http://127.0.0.1:9/v1" and b._api_key == "sk-from-env"
    monkeypatch.setenv("MY_KEY", "sk-other")
    assert OpenAIBackend(api_key_env="MY_KEY")._api_key == "sk-other"
    with pytest.raises(Exception, match="read_timeout must be a number"):
        OpenAIBackend(read_timeout="soon")
    with pytest.raises(Exception, match="must start with http"):
        OpenAIBackend(base_url="localhost:8000")


def test_cancel_while_the_server_is_silent_returns_at_once():
    import threading

    def handler(conn, i, line, body):
        start_sse(conn)
        conn.sendall(delta("Hi"))
        stall(5)

    cancel = threading.Event()
    with FaultServer(handler) as server:
        b = backend(server.url)
        threading.Timer(0.3, cancel.set).start()  # Ctrl-C, as the REPL's handler sets it
        t0 = time.monotonic()
        chunks = list(b.stream_chat(HELLO, GREEDY, cancel=cancel))
    assert time.monotonic() - t0 < 1.5
    assert [c.text for c in chunks] == ["Hi", ""] and chunks[-1].finish_reason == "interrupted"
