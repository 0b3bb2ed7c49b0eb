"""One out-of-range sampling value, fed through every edge a value can come in by, gets one message and exit 2.

The edges: a flag, a CHATCLI_* variable, the config file, a prompt file's front matter, /set in the REPL (a real
pty), and an HTTP request to a real `chatcli serve` on 127.0.0.1 (400 in OpenAI's error format). Each edge may say
where the value came from in front of the message; the message itself is the schema's (chatcli.types), word for word.
"""

from __future__ import annotations

import json

import httpx
import pytest

from chatcli import types
from tests.plugins import ServeProcess, run_cli

# (parameter, the value as written, the message every edge gives)
CASES = [
    ("temperature", "-1", "temperature must be >= 0 (0 is greedy); got -1.0"),
    ("top_p", "1.5", "top_p must be in (0, 1]; got 1.5"),
    ("top_k", "-2", "top_k must be >= 0 (0 disables it); got -2"),
    ("min_p", "2", "min_p must be in [0, 1]; got 2.0"),
    ("repeat_penalty", "0", "repeat_penalty must be > 0 (1 disables it); got 0.0"),
    ("seed", "-1", "seed must be in [0, 2^64); got -1"),
    ("seed", "99999999999999999999999", "seed must be in [0, 2^64); got 99999999999999999999999"),
    ("max_tokens", "0", "max_tokens must be in [1, 2^31); got 0"),
]


def test_the_messages_are_the_schemas():
    """The messages above are what chatcli.types says, so the edges below are compared with the one source."""
    for name, value, message in CASES:
        with pytest.raises(types.ParamError) as e:
            types.parse(name, value)
        assert str(e.value) == message
    assert {name for name, _, _ in CASES} == set(types.PARAM_NAMES) - {"stop"}


def error_line(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def ask(model: str, *args: str, env: dict | None = None):
    return run_cli("ask", "--model", model, "--no-save", *args, "hello", env=env)


def test_a_flag(tiny_llama_dir):
    for name, value, message in CASES:
        flag = "--" + name.replace("_", "-")
        assert error_line(ask(str(tiny_llama_dir), f"{flag}={value}")) == f"chatcli: error: {flag}: {message}"


def test_an_environment_variable(tiny_llama_dir):
    for name, value, message in CASES:
        var = f"CHATCLI_{name.upper()}"
        assert error_line(ask(str(tiny_llama_dir), env={var: value})) == f"chatcli: error: {var}: {message}"


def test_the_config_file(tiny_llama_dir, _isolated_home):
    config = _isolated_home / "config.toml"
    for name, value, message in CASES:
        config.write_text(f"{name} = {value}\n")
        assert error_line(ask(str(tiny_llama_dir))) == f"chatcli: error: {config}: {message}"


def test_a_prompt_file(tiny_llama_dir, _isolated_home):
    folder = _isolated_home / "prompts"
    folder.mkdir()
    for name, value, message in CASES:
        path = folder / "bad.md"
        path.write_text(f"---\n{name}: {value}\n---\nYou are terse.\n")
        assert error_line(ask(str(tiny_llama_dir), "--prompt", "bad")) == f"chatcli: error: {path}:2: {message}"


def test_set_in_the_repl(tiny_llama_dir):
    """/set is the one edge that does not end the process: the same message, and the chat goes on unchanged."""
    from tests.test_repl import Term

    t = Term("--model", str(tiny_llama_dir), "--no-save", prompt=r"\d+/\d+ tokens")
    t.prompt()
    for name, value, message in CASES:
        t.line(f"/set {name} {value}")
        shown = t.prompt()
        assert f"error: {message}\n" in shown, shown
        assert "temp 0.7 · top_p 0.95 · seed -" in shown  # the toolbar: nothing changed
    assert t.close() == 0


@pytest.fixture(scope="module")
def server(tiny_llama_dir):
    with ServeProcess("--model", str(tiny_llama_dir)) as s:
        yield s


def test_an_http_request(server):
    assert server.url.startswith("http://127.0.0.1:")
    for name, value, message in CASES:
        body = {"messages": [{"role": "user", "content": "hello"}], name: json.loads(value)}
        r = httpx.post(server.url + "/chat/completions", json=body, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json() == {"error": {"message": message, "type": "invalid_request_error", "param": name, "code": None}}
