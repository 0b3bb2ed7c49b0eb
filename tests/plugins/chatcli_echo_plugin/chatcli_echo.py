"""A deterministic backend: the reply echoes the last user message word by word, one word per "token".

It is a real Backend (the protocol, cancel, stop strings, max_tokens, stats), not a mock: the server and the openai
backend are tested against it where a transformer's speed or randomness would only slow the test down. The tests
that accept the server (issue 7) run the real LocalBackend.
"""

from __future__ import annotations

import os
import time

from chatcli.types import Chunk, Stats


def _words(text: str) -> list[str]:
    return [w + " " for w in text.split()]


class EchoBackend:
    """Echoes; CHATCLI_ECHO_DELAY (seconds per token) makes it slow enough to interrupt."""

    name = "echo"

    def __init__(self, delay: float | None = None, context: int = 512):
        self.delay = float(os.environ.get("CHATCLI_ECHO_DELAY", "0") if delay is None else delay)
        self.context = int(context)
        self.model = None
        self.started: list[str] = []  # first word of each generation, in the order they ran (fairness tests)
        self.finished: list[str] = []  # finish_reason of each generation (disconnect tests)

    def models(self) -> list[str]:
        return ["echo-1"]

    def load(self, model: str) -> None:
        self.model = model

    def count_tokens(self, messages, *, chat_template=None) -> int:
        return sum(len(m.content.split()) + 3 for m in messages)

    def context_length(self) -> int:
        return self.context

    def stream_chat(self, messages, params, *, chat_template=None, cancel=None):
        users = [m.content for m in messages if m.role == "user"]
        yield from self._generate(["echo: "] + _words(users[-1] if users else ""), self.count_tokens(messages),
                                  params, cancel)

    def stream_completion(self, prompt, params, *, cancel=None):
        yield from self._generate(_words(prompt), len(prompt.split()), params, cancel)

    def _generate(self, words, prompt_tokens, params, cancel):
        t0 = time.perf_counter()
        self.started.append(words[1].strip() if len(words) > 1 else "")
        budget = min(params.max_tokens, self.context - prompt_tokens)
        text, reason, n = "", "stop", 0
        for word in words:
            if cancel is not None and cancel.is_set():
                reason = "interrupted"
                break
            if n >= budget:
                reason = "length"
                break
            hit = next((s for s in params.stop if s in text + word), None)
            if hit is not None:  # cut at the stop string, which is not part of the reply
                cut = (text + word).index(hit)
                if cut > len(text):
                    yield Chunk((text + word)[len(text):cut])
                break
            if word == "EXPLODE ":  # a backend that fails mid-reply (server error-path tests)
                raise RuntimeError(f"exploded after {n} words")
            if self.delay:
                time.sleep(self.delay)
            text += word
            n += 1
            yield Chunk(word)
        total = time.perf_counter() - t0
        self.finished.append(reason)
        yield Chunk("", finish_reason=reason, stats=Stats(prompt_tokens=prompt_tokens, completion_tokens=n,
                                                          total_s=total, decode_tps=n / total if total else 0.0))

    def close(self) -> None:
        pass
