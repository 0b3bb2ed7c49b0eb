"""The local backend's extras: per-token probabilities for /probs, and the prompt a model suggests."""

from __future__ import annotations

import json
import subprocess
import sys

from chatcli.backends.base import Message, SamplingParams
from chatcli.backends.local import LocalBackend


def test_probs_records_follow_the_reply(tiny_llama_dir):
    backend = LocalBackend(dtype="float32")
    backend.load(str(tiny_llama_dir))
    backend.want_probs = True
    chunks = list(backend.stream_chat([Message("user", "Hello")], SamplingParams(temperature=0.8, seed=1, max_tokens=12)))
    records = [r for c in chunks for r in c.extra.get("probs", [])]
    assert records, "want_probs must attach records"
    assert all(0.0 < r["p"] <= 1.0 for r in records)
    # One record per generated token (the end-of-turn token is not recorded, nor counted).
    assert len(records) == chunks[-1].stats.completion_tokens
    backend.want_probs = False
    chunks = list(backend.stream_chat([Message("user", "Hello")], SamplingParams(temperature=0.8, seed=1, max_tokens=12)))
    assert not any("probs" in c.extra for c in chunks)


def test_base_model_without_template_gets_classic_prompt(tiny_model_factory):
    path = tiny_model_factory("llama")
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "chatcli", "ask", "--model", str(path), "--json", "-t", "0", "--max-tokens", "4", "Hi"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prompt"] == "classic"
    # A prompt the user names still wins.
    r = subprocess.run(
        [sys.executable, "-m", "chatcli", "ask", "--model", str(path), "--json", "-p", "concise", "--max-tokens", "4", "Hi"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prompt"] == "concise"


def test_chat_model_keeps_default_prompt(tiny_llama_dir):
    backend = LocalBackend(dtype="float32")
    backend.load(str(tiny_llama_dir))
    assert backend.suggested_prompt() is None  # has a chat template, no store record: the user's default applies
