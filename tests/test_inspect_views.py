"""The inspect views in both modes, and the hooks the REPL calls for /tokens and /probs (in-process, no model forward)."""

from __future__ import annotations

import io

import pytest
import torch

from chatcli.engine.introspect import probs_record
from chatcli.engine.tokenizer import load_tokenizer
from chatcli.errors import UsageError
from chatcli.inspectui.common import bar, make_console, percent, token_label
from chatcli.inspectui.heatmap import render_heatmap
from chatcli.inspectui.repl_hooks import show_reply_probs, slash_probs, slash_tokens


@pytest.fixture(scope="module")
def tok(tiny_llama_dir):
    return load_tokenizer(tiny_llama_dir)


def consoles():
    plain, rich = io.StringIO(), io.StringIO()
    return (make_console(True, file=plain, width=90), plain), (make_console(file=rich, width=90, colour=True), rich)


class Local:
    name = "local"

    def __init__(self, tokenizer):
        self.tokenizer, self.want_probs = tokenizer, False


def test_slash_tokens_and_probs(tok, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    (plain, pout), _ = consoles()
    slash_tokens(plain, Local(tok), "Hello there, café")
    assert pout.getvalue().splitlines()[0].replace("│", "") == "Hello there, café"
    with pytest.raises(UsageError, match="local backend"):
        slash_tokens(plain, type("Remote", (), {"name": "openai"})(), "hi")
    with pytest.raises(UsageError):
        slash_tokens(plain, Local(tok), "")
    backend = Local(tok)
    assert slash_probs(backend, "on") is True and backend.want_probs
    assert slash_probs(backend, "OFF") is False and not backend.want_probs
    with pytest.raises(UsageError):
        slash_probs(backend, "maybe")


def test_reply_probs_highlight_low_choices(tok, monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    ids = tok.encode("Paris is nice")
    records = []
    for n, i in enumerate(ids):
        p = torch.full((tok.vocab_size,), 1e-6)
        p[i] = 0.9 if n != 1 else 0.02  # the second token was a surprising pick
        p[(i + 1) % tok.vocab_size] = 0.5
        records.append(probs_record(tok, p / p.sum(), i))
    (plain, pout), (rich, rout) = consoles()
    show_reply_probs(plain, records)
    show_reply_probs(rich, records)
    text = pout.getvalue()
    assert "\x1b" not in text and "token 1:" in text and "token 0:" not in text
    assert f"{len(ids)} tokens" in text and "1 below 10%" in text
    assert "\x1b[" in rout.getvalue()  # coloured by probability in a terminal


def test_model_text_cannot_reach_the_terminal_raw(tok):
    (plain, pout), _ = consoles()
    records = [{"id": 1, "text": "\x1b]0;pwned\x07evil", "p": 0.01, "alternatives": [{"id": 2, "text": "\x1b[2J", "p": 0.9}]}]
    show_reply_probs(plain, records)
    assert "\x1b" not in pout.getvalue() and "\x07" not in pout.getvalue()


def test_heatmap_in_colour_and_plain(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    T = 5
    probs = torch.tril(torch.ones(T, T))
    probs = probs / probs.sum(-1, keepdim=True)
    (plain, pout), (rich, rout) = consoles()
    labels = ["The", " capital", " of", "\n", " France"]
    render_heatmap(plain, probs, labels, "layer 0 · head 0")
    render_heatmap(rich, probs, labels, "layer 0 · head 0")
    rows = [line for line in pout.getvalue().splitlines() if line[:4].strip().isdigit()]
    assert len(rows) == T and "↵" in rows[3]
    assert "48;2;" in rout.getvalue() or "48;5;" in rout.getvalue()  # background colours per cell
    narrow = io.StringIO()
    render_heatmap(make_console(True, file=narrow, width=30), torch.tril(torch.ones(40, 40)) / 40, ["x"] * 40, "t")
    assert "showing the last" in narrow.getvalue() and max(map(len, narrow.getvalue().splitlines()[2:-2])) <= 30


def test_small_formatters(tok):
    assert bar(0.5, 4) == "██  " and bar(1.5, 2) == "██" and bar(0, 3) == "   "
    assert percent(0.5).strip() == "50.0%" and percent(0.0123).strip() == "1.23%" and percent(1e-9) == "<0.01%"
    assert token_label(tok, tok.encode(" capital")[0]) == "' capital'"
    partial = tok.encode("😀")[0]  # a byte-level piece that is only part of the emoji
    assert token_label(tok, partial).startswith("⟨")
