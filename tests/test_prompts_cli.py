"""`chatcli prompts ...` through the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatcli import settings

CHATCLI = str(Path(sys.executable).with_name("chatcli"))


def run(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CHATCLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          input=stdin if stdin is not None else "", timeout=120)


def test_commands_do_not_import_torch():
    code = "import sys, chatcli.commands.prompts, chatcli.commands.history; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_list_show_new():
    r = run("prompts", "list")
    assert r.returncode == 0, r.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in r.stdout.splitlines()[1:]}
    assert {"default", "concise", "coder", "explain", "classic"} <= set(rows)
    assert "temperature=0.2" in rows["coder"][2] and rows["coder"][3] == "packaged"

    r = run("prompts", "show", "coder", "-v", "language=Rust")
    assert r.returncode == 0 and "variables:" in r.stdout and "Unless the user says otherwise, write Rust." in r.stdout

    r = run("prompts", "new", "mine", "--from", "explain")
    assert r.returncode == 0 and (settings.prompts_dir() / "mine.md").read_text() == (Path(settings.PACKAGE_DATA) / "prompts" / "explain.md").read_text()
    listed = json.loads(run("prompts", "list", "--json").stdout)
    assert {"name": "mine", "packaged": False}.items() <= next(p for p in listed if p["name"] == "mine").items()
    r = run("prompts", "new", "mine")
    assert r.returncode == 2 and "already exists" in r.stderr


def test_errors_are_one_line_with_exit_codes():
    folder = settings.prompts_dir()
    folder.mkdir(parents=True)
    (folder / "hot.md").write_text("---\ntemperature: .inf\n---\nx\n")
    r = run("prompts", "show", "hot")  # a sampling value out of range is bad usage, in a file as in a flag
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"chatcli: error: {folder / 'hot.md'}:2: temperature must be >= 0")
    r = run("prompts", "list")  # a broken file is a warning in the listing, not the end of it
    assert r.returncode == 0 and "default" in r.stdout and "hot.md:2" in r.stderr
    assert run("prompts", "show", "nope").returncode == 2
    assert run("prompts", "show", "../../etc/passwd").returncode == 2
    r = run("prompts", "show", "coder", "-v", "oops")
    assert r.returncode == 2 and "name=value" in r.stderr
    (folder / "var.md").write_text("Hello {{ who }}")
    r = run("prompts", "show", "var")
    assert r.returncode == 3 and "var.md:1: undefined variable 'who'" in r.stderr
    assert run("prompts", "show", "var", "-v", "who=you").stdout.rstrip().endswith("Hello you")


EDITOR = """
import os, pathlib, sys
path, count = pathlib.Path(sys.argv[1]), pathlib.Path(os.environ["EDIT_COUNT"])
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
versions = os.environ["EDIT_VERSIONS"].split("|")
path.write_text(versions[min(n, len(versions) - 1)])
"""


@pytest.fixture
def editor(tmp_path):
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    return {"EDITOR": f"{sys.executable} {script}", "EDIT_COUNT": str(tmp_path / "count"), "VISUAL": ""}, tmp_path / "count"


def test_edit_validates_and_reopens_until_fixed(editor):
    env, count = editor
    env["EDIT_VERSIONS"] = "---\ntemprature: 1\n---\nbroken|---\ntemperature: 0.3\n---\nFixed."
    r = run("prompts", "edit", "concise", env=env)
    assert r.returncode == 0, r.stderr
    assert count.read_text() == "2"
    assert "concise.md:2: unknown key 'temprature'" in r.stderr and "copied the packaged" in r.stdout
    assert (settings.prompts_dir() / "concise.md").read_text() == "---\ntemperature: 0.3\n---\nFixed."
    assert (Path(settings.PACKAGE_DATA) / "prompts" / "concise.md").read_text().startswith("---\ndescription: Short")


def test_edit_gives_up_when_an_edit_changes_nothing(editor):
    env, count = editor
    env["EDIT_VERSIONS"] = "{% if %}"
    r = run("prompts", "edit", "default", env=env)
    assert r.returncode == 3 and count.read_text() == "2" and "broken Jinja" in r.stderr


def test_render_prints_exact_text_and_tokens(tiny_llama_dir):
    r = run("prompts", "render", "concise", "--model", str(tiny_llama_dir), "--message", "Hi there", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["text"].startswith("<|im_start|>system\nYou are a concise assistant.")
    assert out["text"].endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    from chatcli.engine.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_llama_dir)
    assert out["tokens"] == tok.encode(out["text"]) and len(out["pieces"]) == len(out["tokens"])
    assert out["template"] == "the model's template"

    r = run("prompts", "render", "classic", "--model", str(tiny_llama_dir))
    assert r.returncode == 0 and "the prompt file's template" in r.stdout
    assert "User: Hello!\nAI Assistant:" in r.stdout and '# stop strings: ["\\nUser:"]' in r.stdout
