"""Tools in the chat, end to end: MCP servers written with the `mcp` SDK (stdio, and streamable HTTP on 127.0.0.1),
the REPL in a pty, the real Qwen2.5-Coder-0.5B at temperature 0 asked for the weather; y runs the call, n refuses it,
the result shows in /transcript and in the history."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_repl import CHATCLI, Term

SERVER = Path(__file__).parent / "data" / "mcp_weather_server.py"
QUESTION = "What is the weather in Paris?"
RESULT = "sunny and 21 degrees"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tmp_path):
    """The weather server over streamable HTTP; yields (url, the file its calls are logged to)."""
    port, log = _free_port(), tmp_path / "http_calls.txt"
    proc = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)], env={"WEATHER_CALLS": str(log),
                            "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the HTTP MCP server did not start")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp", log
    proc.terminate()
    proc.wait(timeout=10)


def _calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.slow
def test_mcp_tools_in_the_chat(qwen_dir, _isolated_home, http_server, tmp_path):
    url, http_log = http_server
    stdio_log = tmp_path / "stdio_calls.txt"
    (_isolated_home / "config.toml").write_text(
        f'[mcp.servers.weather]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(SERVER))}]\n'
        f'env = {{ WEATHER_CALLS = {json.dumps(str(stdio_log))} }}\n\n'
        f'[mcp.servers.web]\nurl = "{url}"\n')
    t = Term("--model", str(qwen_dir), "-t", "0", "--max-tokens", "30", "--system", "You are a helpful assistant.",
             prompt=r"\d+/\d+ token")
    t.prompt(timeout=120)
    t.line("/tools")
    listed = t.prompt()
    assert "weather_get_weather" in listed and "web_get_weather" in listed and "mcp weather" in listed
    assert "read_file" in listed  # the built-ins are listed, off until /tools on

    # stdio: y runs the call; its result goes back and shows in /transcript.
    t.line("/tools off web_get_weather")
    t.prompt()
    t.line(QUESTION)
    assert '"city": "Paris"' in t.expect(r"run weather_get_weather\(.*\)\? ", timeout=120)
    t.line("y")
    t.prompt(timeout=120)
    assert _calls(stdio_log) == ["Paris"]
    t.line("/transcript")
    shown = t.prompt()
    assert "tool call" in shown and "weather_get_weather" in shown and RESULT in shown

    # n refuses: the tool does not run and the model is told.
    t.line("/reset")
    t.prompt()
    t.line(QUESTION)
    t.expect(r"run weather_get_weather\(.*\)\? ", timeout=120)
    t.line("n")
    assert "refused" in t.prompt(timeout=120)
    assert _calls(stdio_log) == ["Paris"]

    # streamable HTTP: the same call through the other server.
    t.line("/tools on web_get_weather")
    t.prompt()
    t.line("/tools off weather_get_weather")
    t.prompt()
    t.line("/reset")
    t.prompt()
    t.line(QUESTION)
    t.expect(r"run web_get_weather\(.*\)\? ", timeout=120)
    t.line("y")
    t.prompt(timeout=120)
    assert _calls(http_log) == ["Paris"]
    t.line("/transcript")
    assert RESULT in t.prompt()
    assert t.close() == 0

    # The history keeps the calls and their results: conversations 1 (stdio, y) and 3 (HTTP, y).
    for conv_id, tool in (("1", "weather_get_weather"), ("3", "web_get_weather")):
        r = subprocess.run([CHATCLI, "history", "show", conv_id, "--plain"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert tool in r.stdout and "Tool result" in r.stdout and RESULT in r.stdout
    r = subprocess.run([CHATCLI, "history", "show", "2", "--plain"], capture_output=True, text=True, timeout=60)
    assert "declined" in r.stdout


@pytest.mark.slow
def test_ask_with_tools_refuses_without_a_terminal_unless_yes_tools(qwen_dir, _isolated_home, tmp_path):
    log = tmp_path / "calls.txt"
    (_isolated_home / "config.toml").write_text(
        f'[mcp.servers.weather]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(SERVER))}]\n'
        f'env = {{ WEATHER_CALLS = {json.dumps(str(log))} }}\n')
    base = [CHATCLI, "ask", "--model", str(qwen_dir), "-t", "0", "--max-tokens", "30", "--system",
            "You are a helpful assistant.", "-T", "weather_get_weather", QUESTION]
    r = subprocess.run(base, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "refused weather_get_weather" in r.stderr and "stdin is not a terminal" in r.stderr
    assert _calls(log) == []
    r = subprocess.run([*base, "--yes-tools"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'tool call: weather_get_weather({"city": "Paris"})' in r.stderr and _calls(log) == ["Paris"]
    r = subprocess.run([CHATCLI, "ask", "--model", str(qwen_dir), "-T", "nope", "hi"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "-T nope: no such tool" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_ctrl_c_during_a_tool_call_cancels_it_and_keeps_the_chat(qwen_dir, _isolated_home):
    (_isolated_home / "config.toml").write_text(
        f'[mcp.servers.weather]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(SERVER))}]\n'
        'env = { WEATHER_DELAY = "60" }\n')
    t = Term("--model", str(qwen_dir), "-t", "0", "--max-tokens", "30", "--system", "You are a helpful assistant.",
             prompt=r"\d+/\d+ token")
    t.prompt(timeout=120)
    t.line("/set tool_rounds 2")
    assert "tool_rounds = 2" in t.prompt()
    t.line(QUESTION)
    t.expect(r"run weather_get_weather\(.*\)\? ", timeout=120)
    t.line("y")
    time.sleep(1.5)  # the call is running (it takes a minute)
    t.child.sendintr()
    assert "tool call cancelled" in t.prompt(timeout=30)
    t.line("/transcript")
    shown = t.prompt()
    assert QUESTION in shown and "cancelled this tool call" in shown
    assert t.close() == 0
