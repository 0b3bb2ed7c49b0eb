"""The REPL and ask with the real default model (SmolLM2-135M-Instruct): answers are sensible English."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.test_repl import CHATCLI, Term

QUESTION = "What is the capital of France?"


@pytest.mark.slow
def test_chat_answers_and_retry_repeats_at_temperature_0(smollm2_dir):
    t = Term("--model", str(smollm2_dir), "-t", "0", "--max-tokens", "12", "--no-save", prompt=r"\d+/8192 tokens")
    t.prompt(timeout=120)
    t.line(QUESTION)
    assert "Paris" in t.expect(r"tok/s", timeout=120)
    t.prompt()
    transcripts = []
    for command in ("/transcript", "/retry", "/transcript"):
        t.line(command)
        shown = t.prompt(timeout=120)
        if command == "/transcript":
            transcripts.append(shown[shown.index("system:"):])
    assert transcripts[0] == transcripts[1] and "Paris" in transcripts[0]
    assert t.close() == 0


@pytest.mark.slow
def test_ask_json_real_model(smollm2_dir):
    r = subprocess.run([CHATCLI, "ask", "--model", str(smollm2_dir), "-t", "0", "--max-tokens", "16", "--json",
                        "--no-save", QUESTION], stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert "Paris" in obj["text"] and obj["model"] == smollm2_dir.name
    assert obj["finish_reason"] in ("stop", "length") and obj["usage"]["completion_tokens"] <= 16
