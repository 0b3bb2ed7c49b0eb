"""The second turn of a thinking conversation: Qwen3's template drops the earlier reply's reasoning, so the prompt
departs from what the cache holds right where that reasoning began; everything before it is reused, and the reply's
cached_tokens says exactly that much."""

from __future__ import annotations

from chatcli.backends.local import LocalBackend
from chatcli.templates import render_chat
from chatcli.types import Message, SamplingParams
from tests.thinkers import REPLY, SCRIPT, THOUGHT

GREEDY = SamplingParams(temperature=0, max_tokens=60)


def _reply(backend, messages):
    chunks = list(backend.stream_chat(messages, GREEDY))
    return "".join(c.reasoning for c in chunks), "".join(c.text for c in chunks), chunks[-1].stats


def test_second_turn_reuses_the_cache_up_to_the_dropped_reasoning(tiny_qwen3_thinker_dir):
    backend = LocalBackend()
    backend.load(str(tiny_qwen3_thinker_dir))
    tok = backend.tokenizer
    first = [Message("system", "You are terse."), Message("user", "Hello world, what is Paris?")]
    reasoning, text, stats1 = _reply(backend, first)
    assert (reasoning, text) == (THOUGHT, REPLY)
    prompt1 = tok.encode(render_chat(tok.chat_template, first).text)
    assert stats1.prompt_tokens == len(prompt1) and stats1.cached_tokens == 0

    second = [*first, Message("assistant", text, reasoning=reasoning), Message("user", "And what is Rome?")]
    rendered = render_chat(tok.chat_template, second).text
    assert THOUGHT not in rendered and "<think>" not in rendered  # the template dropped it: it is not sent back
    prompt2 = tok.encode(rendered)
    held = prompt1 + tok.encode(SCRIPT)  # what the cache holds after the first reply
    common = next(i for i, (a, b) in enumerate(zip(held, prompt2)) if a != b)
    assert common == len(prompt1)  # they part where the first reply's reasoning began

    reasoning2, text2, stats2 = _reply(backend, second)
    assert (reasoning2, text2) == (THOUGHT, REPLY)
    assert stats2.prompt_tokens == len(prompt2)
    assert stats2.cached_tokens == common

    # a third turn: the second reply's reasoning is dropped too; the cache holds turn two's prompt whole
    third = [*second, Message("assistant", text2, reasoning=reasoning2), Message("user", "Thanks!")]
    _, _, stats3 = _reply(backend, third)
    assert stats3.cached_tokens == len(prompt2)
    backend.close()
