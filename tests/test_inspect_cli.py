"""`chatcli inspect ...` through the real console script on a tiny random model (plain output: stdout is a pipe)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CHATCLI = Path(sys.executable).with_name("chatcli")


def run(*args, env_extra=None, timeout=120):
    env = {**os.environ, "COLUMNS": "100", **(env_extra or {})}
    cmd = [str(CHATCLI)] if CHATCLI.exists() else [sys.executable, "-m", "chatcli"]
    return subprocess.run([*cmd, "inspect", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_tokens_join_to_the_text(tiny_llama_dir):
    text = "Hello world! café 😀 你好"
    r = run("tokens", text, "--model", str(tiny_llama_dir))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout  # piped: no ANSI
    lines = r.stdout.splitlines()
    assert lines[0].replace("│", "") == text  # the boundaries are the only thing added
    from chatcli.engine.tokenizer import load_tokenizer

    n = len(load_tokenizer(tiny_llama_dir).encode(text))
    assert lines[0].count("│") <= n - 1
    assert lines[-1].startswith(f"{n} tokens · {len(text)} characters")


def test_next_shows_softmax_at_both_temperatures(tiny_llama_dir):
    import torch

    from chatcli.engine.loader import load_model
    from chatcli.engine.tokenizer import load_tokenizer

    text = "The capital of France is"
    r = run("next", text, "-t", "0.5", "--top", "6", "--seed", "3", "--model", str(tiny_llama_dir))
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if re.match(r"\s*\d+\s", line) or "others" in line]
    pairs = [[float(x.lstrip("<")) for x in re.findall(r"(<?[\d.]+)%", line)] for line in rows]
    assert all(len(p) == 2 for p in pairs) and len(pairs) >= 7
    assert sum(p[0] for p in pairs) == pytest.approx(100, abs=0.5) and sum(p[1] for p in pairs) == pytest.approx(100, abs=0.5)
    model = load_model(tiny_llama_dir, "float32", 32)
    tok = load_tokenizer(tiny_llama_dir)
    logits = model(torch.tensor([tok.encode(text, add_special_tokens=True)]), 0)[0, -1, : tok.vocab_size]
    p1, p5 = torch.softmax(logits, -1), torch.softmax(logits / 0.5, -1)
    top = p1.argsort(descending=True)[:6]
    for row, i in zip(pairs, top):  # the top rows, in order, at T=1 and T=0.5, to the printed precision
        assert row[0] == pytest.approx(100 * p1[i].item(), abs=0.01)
        assert row[1] == pytest.approx(100 * p5[i].item(), abs=0.01)
    assert re.search(r"entropy: [\d.]+ bits at T=1, [\d.]+ bits at T=0.5", r.stdout)
    assert re.search(r"sampled at T=0.5: .*, rank \d+ of \d+", r.stdout)


def test_attention_heatmap_and_png(tiny_model_factory, tmp_path):
    path = tiny_model_factory("mistral")
    r = run("attention", "The capital of France is Paris", "--layer", "1", "--head", "2", "--model", str(path))
    assert r.returncode == 0, r.stderr
    grid = [line.rstrip() for line in r.stdout.splitlines() if re.match(r"\s*\d+ \S", line)]
    assert len(grid) >= 3
    width = len(grid[1]) - len(grid[0])  # one more cell per row: each query sees itself and the past, never the future
    assert width in (1, 2)
    for i, line in enumerate(grid):
        assert len(line) == len(grid[0]) + i * width, line
    png = tmp_path / "heads.png"
    r = run("attention", "The capital of France is Paris", "--png", str(png), "--model", str(path))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "4 heads of layer 0" in r.stdout


def test_model_neighbours_analogy(tiny_model_factory):
    path = tiny_model_factory("qwen2")
    r = run("model", "--model", str(path))
    assert r.returncode == 0, r.stderr
    from chatcli.engine.loader import load_model

    total = sum(p.numel() for p in load_model(path, "float32", 8).parameters())
    assert f"{total:,} parameters" in r.stdout and "tied" in r.stdout
    counts = [int(m.replace(",", "")) for m in re.findall(r"^(?:embedding|attention|MLP|norms) +([\d,]+)", r.stdout, re.M)]
    assert sum(counts) == total
    assert "KV cache for one full context" in r.stdout
    r = run("neighbours", "capital", "--top", "4", "--model", str(path))
    assert r.returncode == 0, r.stderr
    assert "' capital'" in r.stdout.splitlines()[0] and len(re.findall(r"^\d+\s", r.stdout, re.M)) == 4
    r = run("analogy", "Paris", "-", "France", "+", "capital", "--top", "3", "--model", str(path))
    assert r.returncode == 0, r.stderr
    assert "Paris − France + capital" in r.stdout and len(re.findall(r"^\d+\s", r.stdout, re.M)) == 3


def test_bad_input_exit_codes(tiny_llama_dir):
    m = ("--model", str(tiny_llama_dir))
    cases = [  # the first six fail before torch is imported, so they cost little
        (("tokens", "hi", "--backend", "openai", *m), 2, "local backend only"),
        (("next", "", *m), 2, "empty"),
        (("next", "hi", "-t", "-1", *m), 2, "temperature must be >= 0"),
        (("analogy", "king", "man", *m), 2, "missing + or -"),
        (("model", "--model", "no-such-model"), 3, "not in the store"),
        (("model", "--dtype", "int3", *m), 2, "--dtype"),
        (("attention", "hi there", "--layer", "9", *m), 2, "--layer must be in 0..1"),
        (("neighbours", "zzqx", *m), 2, "--mean"),
    ]
    for args, code, words in cases:
        r = run(*args)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_layer_and_head_ranges():
    from chatcli.errors import UsageError
    from chatcli.inspectui.internals import pick_heads, pick_layer

    assert pick_layer(-1, 30) == 29 and pick_layer(0, 30) == 0
    assert pick_heads(None, None, 3) == [0, 1, 2] == pick_heads(None, "all", 3)
    assert pick_heads(2, None, 3) == [2] and pick_heads(None, "0,2", 3) == [0, 2]
    for bad in (lambda: pick_layer(30, 30), lambda: pick_layer(-31, 30), lambda: pick_heads(3, None, 3),
                lambda: pick_heads(None, "x", 3), lambda: pick_heads(None, "0,5", 3), lambda: pick_heads(1, "all", 3)):
        with pytest.raises(UsageError):
            bad()


def test_analogy_terms():
    from chatcli.errors import UsageError
    from chatcli.inspectui.embed import parse_terms

    want = [(1, "king"), (-1, "man"), (1, "woman")]
    assert parse_terms(["king", "-", "man", "+", "woman"]) == want
    assert parse_terms(["king - man + woman"]) == want
    assert parse_terms(["king", "-man", "+woman"]) == want
    assert parse_terms(["well-known", "+", "x"]) == [(1, "well-known"), (1, "x")]
    for bad in (["king"], ["king", "-"], ["king", "-", "+", "x"], ["a", "b"]):
        with pytest.raises(UsageError):
            parse_terms(bad)
