"""The logits-processor hook of engine/generate.py: processors see the logits before sampling, hear the drawn token,
and end the reply when done. (Structured output and the thinking budget are built on it.)"""

from __future__ import annotations

import torch

from chatcli.engine.generate import stream_generate
from chatcli.engine.loader import load_model
from chatcli.engine.sampling import make_sampler
from chatcli.engine.tokenizer import load_tokenizer


class Script:
    """Forces TOKENS one after another, then says it is done."""

    def __init__(self, tokens: list[int]):
        self.tokens, self.heard = list(tokens), []

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(logits, float("-inf"))
        forced[self.tokens[len(self.heard)]] = 0.0
        return forced

    def accept(self, token: int) -> None:
        self.heard.append(token)

    def is_done(self) -> bool:
        return len(self.heard) == len(self.tokens)


def test_a_processor_forces_tokens_at_any_temperature_and_ends_the_reply(tiny_llama_dir):
    model, tok = load_model(tiny_llama_dir, "float32"), load_tokenizer(tiny_llama_dir)
    want = tok.encode("hello world", add_special_tokens=False)
    for temperature in (0.0, 1.5):
        script = Script(want)
        chunks = list(stream_generate(model, tok, tok.encode("a b c", add_special_tokens=False), max_tokens=50,
                                      sampler=make_sampler(temperature, 1.0, 0, 0.0, 7), processors=[script]))
        assert script.heard == want
        assert "".join(c.text for c in chunks) == tok.decode(want)
        assert chunks[-1].finish_reason == "stop"
        assert chunks[-1].stats.completion_tokens == len(want)
