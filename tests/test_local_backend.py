"""The local backend's extras: per-token probabilities for /probs, its notices, and the prompt a model suggests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chatcli.backends.local import LocalBackend
from chatcli.types import Message, Notice, SamplingParams


def test_probs_records_follow_the_reply(tiny_llama_dir):
    backend = LocalBackend(dtype="float32")
    backend.load(str(tiny_llama_dir))
    backend.want_probs = True
    chunks = list(backend.stream_chat([Message("user", "Hello")], SamplingParams(temperature=0.8, seed=1, max_tokens=12)))
    records = [r for c in chunks for r in c.probs]
    assert records, "want_probs must attach records"
    assert all(0.0 < r["p"] <= 1.0 for r in records)
    # One record per generated token (the end-of-turn token is not recorded, nor counted).
    assert len(records) == chunks[-1].stats.completion_tokens
    backend.want_probs = False
    chunks = list(backend.stream_chat([Message("user", "Hello")], SamplingParams(temperature=0.8, seed=1, max_tokens=12)))
    assert not any(c.probs for c in chunks)


def test_notices_ride_on_the_chunks_or_reach_on_notice(tiny_llama_dir, monkeypatch):
    """What the backend has to say while loading (here: the compiled step failed) goes to on_notice when the caller
    set one, else it comes with the next reply's first chunk; never to stderr behind the caller's back."""
    from chatcli.engine import compile as compiling

    def broken(*args, **kwargs):
        raise compiling.CompileError("stubbed failure")

    monkeypatch.setattr(compiling, "use", broken)
    params = SamplingParams(temperature=0, max_tokens=3)
    quiet = LocalBackend(dtype="float32", compile="on")
    quiet.load(str(tiny_llama_dir))
    chunks = list(quiet.stream_chat([Message("user", "Hello")], params))
    assert chunks[0].notices == (Notice("warning", "compiled decode step: stubbed failure; decoding without it"),)
    assert not any(c.notices for c in chunks[1:])
    assert not any(c.notices for c in quiet.stream_chat([Message("user", "Hello")], params))  # told once

    heard: list[Notice] = []
    told = LocalBackend(dtype="float32", compile="on")
    told.on_notice = heard.append
    told.load(str(tiny_llama_dir))
    assert [n.kind for n in heard] == ["warning"] and "stubbed failure" in heard[0].text
    assert not any(c.notices for c in told.stream_chat([Message("user", "Hello")], params))


def test_the_constructor_takes_only_its_own_keys():
    with pytest.raises(TypeError):
        LocalBackend(dtyp="float32")


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
