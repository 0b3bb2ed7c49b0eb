"""`ask` with a thinking model: stdout gets only the answer, --show-thinking sends the reasoning to stderr, and
--json has reasoning and text apart. The model is the tiny Qwen3 trained to think (tests/thinkers.py), run as the
real command."""

from __future__ import annotations

import json

from tests.test_ask import ask
from tests.thinkers import REPLY, THOUGHT

COMMON = ("--temperature", "0", "--max-tokens", "60", "--no-save")


def test_stdout_has_only_the_answer(tiny_qwen3_thinker_dir):
    r = ask("--model", str(tiny_qwen3_thinker_dir), *COMMON, "--plain", "Hello world, what is Paris?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == REPLY + "\n"
    assert THOUGHT.encode() not in r.stderr and b"think>" not in r.stdout + r.stderr


def test_show_thinking_sends_the_reasoning_to_stderr(tiny_qwen3_thinker_dir):
    r = ask("--model", str(tiny_qwen3_thinker_dir), *COMMON, "--plain", "--show-thinking", "What is Paris?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == REPLY + "\n"
    assert THOUGHT in r.stderr.decode() and b"think>" not in r.stderr


def test_json_has_reasoning_and_text_apart(tiny_qwen3_thinker_dir):
    r = ask("--model", str(tiny_qwen3_thinker_dir), *COMMON, "--json", "--show-thinking", "Tell me about France")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert (obj["reasoning"], obj["text"], obj["finish_reason"]) == (THOUGHT, REPLY, "stop")
    assert THOUGHT not in r.stderr.decode()  # --json carries it; stderr stays for notices
