"""Conversation with the real LocalBackend and tiny random models: the 64-token context, interrupts, base models."""

from __future__ import annotations

import json

import pytest

from chatcli.backends.local import LocalBackend
from chatcli.errors import UsageError
from chatcli.history import History
from chatcli.session import Conversation
from chatcli.templates import render_chat
from chatcli.types import SamplingParams


class RecordingBackend(LocalBackend):
    """The real local backend, also keeping the exact text each turn rendered (to check what the model saw)."""

    def stream_chat(self, messages, params, *, chat_template=None, cancel=None):
        tok = self.tokenizer
        self.rendered = render_chat(chat_template or tok.chat_template, messages, bos_token=tok.bos_token, eos_token=tok.eos_token).text
        self.max_tokens = params.max_tokens
        yield from super().stream_chat(messages, params, chat_template=chat_template, cancel=cancel)


@pytest.fixture(scope="module")
def small_ctx_backend(tmp_path_factory, tiny_tokenizer_dir):
    from tests.tinymodels import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("m") / "tiny64", "llama", tokenizer_dir=tiny_tokenizer_dir,
                           max_position_embeddings=64)
    backend = RecordingBackend()
    backend.load(str(path))
    assert backend.context_length() == 64
    return backend


def test_conversation_longer_than_64_tokens_keeps_running(small_ctx_backend):
    b = small_ctx_backend
    conv = Conversation(b, "tiny64", "concise", system="Be brief.", defaults=SamplingParams(temperature=0, max_tokens=12),
                        overrides={"max_tokens": 12})
    for i in range(6):
        reply = "".join(c.text for c in conv.send(f"question {i}?"))
        assert conv.turns[-1].finish_reason in ("stop", "length") and conv.turns[-1].content == reply
        assert b.rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>")  # the system prompt is still there
        assert f"question {i}?" in b.rendered
        assert len(b.tokenizer.encode(b.rendered)) + b.max_tokens <= 64
    assert any(n.startswith("dropped") and n.endswith("to fit 64-token context") for n in conv.notices)
    assert len(conv.turns) == 12 and "question 0?" not in b.rendered
    assert History().get(conv.conv_id)[0].turn_count == 12


def test_reply_capped_at_what_the_context_leaves(small_ctx_backend):
    b = small_ctx_backend
    conv = Conversation(b, "tiny64", "concise", system="Be brief.", overrides={"temperature": 0, "max_tokens": 1000}, save=False)
    "".join(c.text for c in conv.send("hello there"))
    prompt_tokens = len(b.tokenizer.encode(b.rendered))
    assert b.max_tokens == 64 - prompt_tokens
    assert conv.turns[-1].finish_reason in ("length", "stop")


def test_system_and_message_too_long_names_both(small_ctx_backend):
    conv = Conversation(small_ctx_backend, "tiny64", "concise", system="Be brief.", save=False)
    with pytest.raises(UsageError, match=r"system prompt \(\d+ tokens\) and your message \(\d+ tokens\) do not fit the 64-token"):
        list(conv.send("the quick brown fox jumps over the lazy dog " * 10))
    assert conv.turns == []


def test_retry_at_temperature_zero_repeats_and_interrupt_keeps_partial(tiny_llama_dir):
    b = LocalBackend()
    b.load(str(tiny_llama_dir))
    conv = Conversation(b, "tiny", "concise", system="Hi.", overrides={"max_tokens": 24})
    conv.set_param("temperature", "0")
    first = "".join(c.text for c in conv.send("hello"))
    again = "".join(c.text for c in conv.retry())
    assert first == again and len(conv.turns) == 2
    # Stop after the third chunk: the reply so far stays, marked interrupted.
    conv.set_param("max_tokens", "200")
    got = []
    for chunk in conv.send("more"):
        got.append(chunk.text)
        if len(got) == 3:
            conv.cancel.set()
    assert conv.turns[-1].finish_reason == "interrupted"
    assert conv.turns[-1].content == "".join(got) and conv.turns[-1].stats is not None


def test_base_model_uses_the_classic_template(tiny_model_factory):
    path = tiny_model_factory("llama")
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    b = RecordingBackend()
    b.load(str(path))
    conv = Conversation(b, "base", "classic", overrides={"temperature": 0, "max_tokens": 8}, save=False)
    list(conv.send("What is the capital of France?"))
    assert b.rendered == ("What follows is a conversation between a user and a helpful AI assistant:\n\n"
                          "User: What is the capital of France?\nAI Assistant:")
    assert "\nUser:" not in conv.turns[-1].content
