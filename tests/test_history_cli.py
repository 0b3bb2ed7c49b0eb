"""`chatcli history ...` through the real console script, on a real SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chatcli import settings
from chatcli.history import History, Turn
from chatcli.types import SamplingParams, Stats

CHATCLI = str(Path(sys.executable).with_name("chatcli"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHATCLI, *args], capture_output=True, text=True, input="", timeout=120, env=dict(os.environ))


def seed_store() -> tuple[int, int]:
    h = History()
    a = h.create("tiny", "default", "Be nice.")
    h.add_turn(a, Turn("user", "What is photosynthesis?"))
    h.add_turn(a, Turn("assistant", "Plants \x1b]0;pwned\x07make sugar from [red]light[/red].", "stop",
                       Stats(completion_tokens=9), SamplingParams(temperature=0.2), "tiny", "default"))
    b = h.create("tiny", "coder", "")
    h.add_turn(b, Turn("user", "reverse a list"))
    h.add_turn(b, Turn("assistant", "xs[::-1]", "interrupted"))
    h.close()
    return a, b


def test_list_show_export_search_rm():
    a, b = seed_store()
    r = run("history", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split("\t") == ["id", "title", "model", "turns", "updated"]
    assert [line.split("\t")[:4] for line in lines[1:]] == [[str(b), "reverse a list", "tiny", "2"],
                                                           [str(a), "What is photosynthesis?", "tiny", "2"]]

    r = run("history", "show", str(a))
    assert r.returncode == 0 and "**User:**" in r.stdout and "What is photosynthesis?" in r.stdout
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "[red]light[/red]" in r.stdout  # sanitised, markup as text

    data = json.loads(run("history", "export", str(a), "--format", "json").stdout)
    assert data["turns"][1]["content"].startswith("Plants \x1b]0;pwned\x07")  # export keeps the raw text
    assert data["turns"][1]["params"]["temperature"] == 0.2 and data["system"] == "Be nice."
    md = run("history", "export", "last").stdout
    assert md.startswith("# reverse a list") and "*(interrupted)*" in md
    out = settings.home() / "conv.md"
    assert run("history", "export", str(b), "-o", str(out)).returncode == 0 and out.read_text() == md

    r = run("history", "search", "sugar")
    assert r.returncode == 0 and r.stdout.splitlines()[1].split("\t")[:3] == [str(a), "What is photosynthesis?", "assistant"]
    assert run("history", "search", "nothing-like-this").returncode == 1

    assert run("history", "rm", str(a)).returncode == 0
    assert [line.split("\t")[0] for line in run("history", "list").stdout.splitlines()[1:]] == [str(b)]


def test_bad_ids_and_formats():
    seed_store()
    for args, code, text in [
        (("history", "show", "99"), 2, "no conversation with id 99"),
        (("history", "show", "abc"), 2, "must be a number or 'last'"),
        (("history", "export", "1", "--format", "xml"), 2, "markdown or json"),
        (("history", "rm", "1", "99"), 2, "no conversation with id 99"),
    ]:
        r = run(*args)
        assert r.returncode == code and text in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    assert len(History().list()) == 2  # the failed rm removed nothing


def test_corrupt_store_is_reported_and_kept():
    path = settings.data_dir() / "history.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage" * 64)
    r = run("history", "list")
    assert r.returncode == 1 and "not a SQLite database" in r.stderr and r.stderr.count("\n") == 1
    assert path.read_bytes() == b"\x00garbage" * 64


def test_empty_store():
    r = run("history", "list")
    assert r.returncode == 0 and "no saved conversations yet" in r.stderr
