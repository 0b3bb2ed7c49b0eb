"""Reasoning in the chat REPL: it streams dimmed under a "thinking" header, collapses into one line when the answer
starts, and /think prints it; on a tiny model whose template opens <think> in the prompt (as DeepSeek-R1's does)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from chatcli.ui import MarkdownStream, PlainStream

CHATCLI = str(Path(sys.executable).with_name("chatcli"))
SUMMARY = re.compile(r"thought for (\d+) tokens, \d+\.\d s; /think shows it")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\r")


def test_rich_view_shows_thinking_then_collapses_it_into_one_line():
    console = Console(file=io.StringIO(), width=60, height=20, force_terminal=True, color_system="truecolor")
    with MarkdownStream(console, refresh_per_second=1000) as view:
        for piece in ["Let ", "me ", "see."]:
            view.feed_reasoning(piece)
        view.feed("The answer.")
    raw = console.file.getvalue()
    assert "thinking" in raw and "Let" in raw  # drawn in the live area while it streamed (redraws are rate-limited)
    final = ANSI.sub("", raw)
    assert SUMMARY.search(final).group(1) == "3"
    assert final.index("thought for") < final.rindex("The answer.")


def test_plain_view_keeps_the_answer_and_one_summary_line():
    out = io.StringIO()
    with PlainStream(out) as view:
        view.feed_reasoning("hmm")
        view.feed_reasoning(" ok")
        view.feed("Answer.")
    first, second = out.getvalue().splitlines()
    assert SUMMARY.fullmatch(first.strip("[]")) and second == "Answer."


def test_piped_chat_with_a_thinking_budget_and_think_command(tiny_qwen3_dir, tmp_path):
    model = shutil.copytree(tiny_qwen3_dir, tmp_path / "opens-think")
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg["chat_template"] += "{% if add_generation_prompt %}<think>\nHmm{% endif %}"
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    script = "/set think_budget 3\nhello\n/think\n"
    r = subprocess.run([CHATCLI, "chat", "--model", str(model), "--no-save", "-t", "0", "--max-tokens", "8"],
                       input=script, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "think_budget = 3"
    assert SUMMARY.fullmatch(lines[1].strip("[]")) and int(SUMMARY.fullmatch(lines[1].strip("[]")).group(1)) <= 3
    at = lines.index("thinking")
    assert at > 2 and lines[at + 1:]  # /think printed the reasoning after the reply and its stats line


def test_pty_chat_shows_the_summary_and_the_answer_and_think_prints_the_reasoning(tiny_qwen3_thinker_dir):
    from tests.test_repl import Term
    from tests.thinkers import REPLY, THOUGHT

    t = Term("--model", str(tiny_qwen3_thinker_dir), "-t", "0", "--no-save", "--max-tokens", "60",
             prompt=r"\d+/1024 tokens")
    try:
        t.prompt()
        t.line("hello")
        out = t.prompt()
        assert SUMMARY.search(out) and REPLY in out
        assert out.index("thought for") < out.index(REPLY)
        assert THOUGHT not in out.split("thought for")[-1]  # collapsed: the answer follows the summary alone
        t.line("/think")
        assert THOUGHT in t.prompt()
    finally:
        assert t.close() == 0
