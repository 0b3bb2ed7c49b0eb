"""The tool layer without a model: Python tools' schemas and checks, the built-ins, MCP config, the runner's answers,
and the history's tools column (stored, migrated, rendered)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from chatcli.errors import UsageError
from chatcli.history import History, Turn, to_markdown
from chatcli.tools.loop import REFUSED, Runner, truncate
from chatcli.tools.mcpconfig import servers
from chatcli.tools.pytools import from_function, now, read_file, schema_of
from chatcli.tools.registry import Registry, Tool, ToolError
from chatcli.types import ToolCall


def forecast(city: str, days: int = 1, metric: bool = True) -> str:
    """Forecast for a city.

    Longer text that the model does not need."""
    return f"{city} {days} {metric}"


def test_schema_from_the_signature_and_arguments_checked():
    assert schema_of(forecast) == {
        "type": "object", "required": ["city"],
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1},
                       "metric": {"type": "boolean", "default": True}}}
    tool = from_function(forecast)
    assert tool.description == "Forecast for a city."
    assert tool.run({"city": "Oslo", "days": 3}, None) == "Oslo 3 True"
    with pytest.raises(ToolError, match="bad arguments"):
        tool.run({"days": "many"}, None)


def test_read_file_stays_under_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("no")
    monkeypatch.chdir(tmp_path / "work")
    assert read_file("notes.txt") == "hello"
    for outside in ("../secret.txt", str(tmp_path / "secret.txt"), "/etc/passwd"):
        with pytest.raises(ToolError, match="outside the working directory"):
            read_file(outside)
    (tmp_path / "work" / "link").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ToolError, match="outside"):
        read_file("link")
    with pytest.raises(ToolError, match="no such file"):
        read_file("missing.txt")
    assert "T" in now() and now()[:4].isdigit()


def test_mcp_servers_from_config_and_mcp_json(tmp_path):
    config = tmp_path / "config.toml"
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {"files": {"command": "npx", "args": ["-y", "x"]},
                                                                  "remote": {"url": "http://127.0.0.1:9/mcp"}}}))
    raw = {"mcp": {"servers": {"weather": {"command": "python", "args": ["w.py"], "env": {"A": "1"}}}}}
    got = servers(raw, config)
    assert [(s.name, s.command, s.args, s.url) for s in got] == [
        ("weather", "python", ("w.py",), None), ("files", "npx", ("-y", "x"), None),
        ("remote", None, (), "http://127.0.0.1:9/mcp")]
    assert got[0].env == {"A": "1"}
    for bad, message in (({"command": "a", "url": "http://x"}, "exactly one"), ({"args": []}, "exactly one"),
                         ({"command": "a", "args": "x"}, "args must be a list"), ({"url": "file:///x"}, "http://")):
        with pytest.raises(UsageError, match=message):
            servers({"mcp": {"servers": {"s": bad}}}, tmp_path / "none" / "config.toml")
    with pytest.raises(UsageError, match="configured twice"):
        servers({"mcp": {"servers": {"files": {"command": "a"}}}}, config)
    (tmp_path / "mcp.json").write_text("{not json")
    with pytest.raises(UsageError, match="mcp.json: not valid JSON"):
        servers({}, config)


def _runner(answers: list[str], notes: list[str]) -> Runner:
    reg = Registry()
    reg.add(from_function(forecast))

    def broken(args, cancel):
        raise RuntimeError("disk on fire")

    reg.add(Tool("broken", "", {"type": "object"}, broken))
    reg.add(Tool("big", "", {"type": "object"}, lambda args, cancel: "x" * 100))
    reg.budget = 50
    return Runner(reg, notes.append, lambda call: answers.pop(0))


def test_runner_answers_the_model_in_every_case():
    notes: list[str] = []
    runner = _runner(["n", "a", "y", "y"], notes)
    call = ToolCall("c1", "forecast", '{"city": "Oslo"}')
    assert runner.execute(call) == REFUSED
    assert runner.execute(call) == "Oslo 1 True"  # "a": yes now, and from now on without asking
    assert runner.execute(call) == "Oslo 1 True"
    assert runner.execute(ToolCall("c2", "broken")) == "Error: RuntimeError: disk on fire"
    assert runner.execute(ToolCall("c3", "big")).endswith("[truncated: 50 of 100 characters shown]")
    assert runner.execute(ToolCall("c4", "nope")).startswith("Error: there is no tool named 'nope'")
    assert runner.execute(ToolCall("c5", "forecast", "{bad")).startswith("Error: the arguments are not valid JSON")
    runner.registry.toggle("forecast", False)
    assert "no tool named 'forecast'" in runner.execute(call)  # off means the model cannot run it either
    assert any("\x1b" not in n and n.startswith("tool call: forecast(") for n in notes)
    assert truncate("abc", 5) == ("abc", None)


def test_call_shown_without_control_sequences():
    notes: list[str] = []
    runner = _runner(["n"], notes)
    runner.execute(ToolCall("c", "forecast", '{"city": "\x1b]52;c;aGk=\x07Oslo\x1b[2J"}'))
    assert "\x1b" not in notes[0] and "\x07" not in notes[0]


def test_history_keeps_tool_calls_and_results_and_migrates_old_stores(tmp_path):
    path = tmp_path / "history.db"
    h = History(path)
    conv = h.create("m", "default", "")
    h.add_turn(conv, Turn("user", "weather?"))
    h.close()
    db = sqlite3.connect(path)  # a store from before tool calls: no tools column
    db.execute("ALTER TABLE turns DROP COLUMN tools")
    db.commit()
    db.close()
    h = History(path)
    call = ToolCall("call_1", "weather_get_weather", '{"city": "Paris"}')
    h.add_turn(conv, Turn("assistant", "", "tool_calls", tool_calls=(call,)))
    h.add_turn(conv, Turn("tool", "sunny, 21 C", tool_call_id="call_1"))
    info, turns = h.get(conv)
    assert turns[0].tool_calls == () and turns[1].tool_calls == (call,) and turns[2].tool_call_id == "call_1"
    text = to_markdown(info, turns)
    assert "weather_get_weather" in text and '{"city": "Paris"}' in text and "**Tool result** (call_1)" in text
    h.close()


def test_entry_point_tools_load_and_a_broken_one_is_a_warning(tmp_path, monkeypatch):
    """A distribution on sys.path with entry points in "chatcli.tools" (the files pip would install)."""
    (tmp_path / "mytools.py").write_text(
        'def shout(text: str, times: int = 1) -> str:\n    """Say TEXT loudly."""\n    return (text.upper() + " ") * times\n')
    info = tmp_path / "mytools-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mytools\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[chatcli.tools]\nshout = mytools:shout\nbroken = mytools:missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from chatcli.tools.pytools import python_tools

    tools, warnings = python_tools()
    by_name = {t.name: t for t in tools}
    assert {"read_file", "now", "shout"} <= set(by_name)
    assert by_name["shout"].parameters["required"] == ["text"]
    assert by_name["shout"].run({"text": "hi", "times": 2}, None) == "HI HI "
    assert len(warnings) == 1 and "'broken'" in warnings[0]


def test_export_json_keeps_the_calls(tmp_path):
    from chatcli.history import to_json

    h = History(tmp_path / "h.db")
    conv = h.create("m", "default", "")
    h.add_turn(conv, Turn("assistant", "", "tool_calls", tool_calls=(ToolCall("c1", "now"),)))
    info, turns = h.get(conv)
    assert json.loads(to_json(info, turns))["turns"][0]["tool_calls"] == [{"id": "c1", "name": "now", "arguments": "{}"}]
    h.close()


def test_mcp_tool_names_fit_the_api():
    from chatcli.tools.mcpclient import tool_name

    assert tool_name("weather", "get_weather") == "weather_get_weather"
    assert tool_name("fs", "read file.v2") == "fs_read_file_v2" and len(tool_name("a", "b" * 100)) == 64
