"""Think on/off from the command line, the environment and /set, on a tiny model with Qwen3's template and tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHATCLI = str(Path(sys.executable).with_name("chatcli"))
EMPTY_THOUGHT = 4  # Qwen3's template with enable_thinking=False adds <think>, \n\n, </think>, \n\n to the prompt


def ask(model, *args, env=None):
    r = subprocess.run([CHATCLI, "ask", "--model", str(model), "--max-tokens", "3", "-t", "0", "--no-save", "--json",
                        *args, "hi"], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    return r


def prompt_tokens(r) -> int:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["usage"]["prompt_tokens"]


def test_no_think_flag_and_config_render_the_empty_thought(tiny_qwen3_dir):
    default = prompt_tokens(ask(tiny_qwen3_dir))
    assert prompt_tokens(ask(tiny_qwen3_dir, "--no-think")) == default + EMPTY_THOUGHT
    assert prompt_tokens(ask(tiny_qwen3_dir, "--think")) == default
    assert prompt_tokens(ask(tiny_qwen3_dir, env={"CHATCLI_THINK": "off"})) == default + EMPTY_THOUGHT
    bad = ask(tiny_qwen3_dir, env={"CHATCLI_THINK": "maybe"})
    assert bad.returncode == 2 and "think must be one of auto, on, off" in bad.stderr


def test_set_think_in_the_repl(tiny_qwen3_dir):
    script = "/set think off\n/set think maybe\n/set think_budget 5\n/set think_budget lots\n/set think default\n"
    r = subprocess.run([CHATCLI, "chat", "--model", str(tiny_qwen3_dir), "--no-save", "--no-think"], input=script,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["think = off", "think_budget = 5", "think = auto"]
    assert r.stderr.splitlines() == ["error: /set think: give on, off or auto, got 'maybe'",
                                     "error: /set think_budget: give a number of tokens (0: no limit), got 'lots'"]


def test_a_prompt_files_think_key_and_a_flag_beats_it(tiny_qwen3_dir, _isolated_home):
    prompts = _isolated_home / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / "quick.md").write_text("---\nthink: off\n---\nBe brief.\n")
    (prompts / "broken.md").write_text("---\nthink: maybe\n---\nBe brief.\n")
    default = prompt_tokens(ask(tiny_qwen3_dir, "--prompt", "quick", "--think"))
    assert prompt_tokens(ask(tiny_qwen3_dir, "--prompt", "quick")) == default + EMPTY_THOUGHT
    bad = ask(tiny_qwen3_dir, "--prompt", "broken")
    assert bad.returncode != 0 and "think must be on, off or auto" in bad.stderr


def test_switching_to_a_prompt_with_think_applies_it(tiny_qwen3_dir, _isolated_home):
    prompts = _isolated_home / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / "quick.md").write_text("---\nthink: off\n---\nBe brief.\n")
    r = subprocess.run([CHATCLI, "chat", "--model", str(tiny_qwen3_dir), "--no-save"], input="/prompt quick\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["prompt: quick", "think = off"]
