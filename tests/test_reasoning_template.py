"""The tiny Qwen3 fixture is a real Qwen3 tokenizer and template, and `think off` renders as transformers does."""

from __future__ import annotations

import pytest

from chatcli.engine.tokenizer import load_tokenizer
from chatcli.templates import render_chat
from chatcli.types import Message
from tests.tinymodels import QWEN3_ADDED

CONVERSATION = [
    Message("system", "You are terse."),
    Message("user", "What is 2+2?"),
    Message("assistant", "4", reasoning="Two and two make four."),
    Message("user", "And 3+3?"),
]


def test_the_tiny_qwen3_tokenizer_has_qwen3s_thinking_tokens(tiny_qwen3_dir):
    tok = load_tokenizer(tiny_qwen3_dir)
    for i, text in QWEN3_ADDED.items():
        assert tok.encode(text) == [i]
    assert tok.decode([151667, 151668]) == "<think></think>"  # not special: decoding keeps them


@pytest.mark.parametrize("think", [None, False, True])
def test_render_matches_transformers_apply_chat_template(tiny_qwen3_dir, think):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tiny_qwen3_dir))
    tok = load_tokenizer(tiny_qwen3_dir)
    kwargs = {} if think is None else {"enable_thinking": think}
    dicts = [{"role": m.role, "content": m.content, **({"reasoning_content": m.reasoning} if m.reasoning else {})}
             for m in CONVERSATION]
    want = hf.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True, **kwargs)
    got = render_chat(tok.chat_template, CONVERSATION, template_kwargs=kwargs).text
    assert got == want
    if think is False:
        assert got.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
