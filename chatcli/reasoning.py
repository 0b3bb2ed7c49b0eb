"""Thinking models: find a model's reasoning markers, split a streamed reply into reasoning and answer, and end
thinking after a budget of tokens.

Pure text and token logic (no model, no terminal). The markers come from the model's own files, the chat template
and the tokenizer's added tokens, never from a list of model names: a template that writes `<think>` into the prompt
or strips `</think>` out of earlier turns names its markers, and so does a tokenizer that gives them their own ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from chatcli.types import Chunk, Notice

# The word inside the tag: Qwen3, SmolLM3 and the DeepSeek-R1 distills say think; others thought or reasoning.
_TAG = re.compile(r"<(think|thinking|thought|reasoning)>")

CANNOT_TURN_OFF = Notice("warning", "this model's chat template has no switch for thinking (enable_thinking); "
                                    "it may think anyway")


@dataclass(frozen=True)
class Markers:
    """The text that opens and closes a reply's reasoning."""

    open: str
    close: str


def find_markers(template: str | None, added_tokens: Iterable[str] = ()) -> Markers | None:
    """The reasoning markers of a model: a `<think>`-like tag whose closing tag the chat template or the tokenizer's
    added tokens also know (added tokens first: they are what the model writes). None for a model that does not think."""
    added = set(added_tokens)
    for source in (" ".join(sorted(added)), template or ""):
        for m in _TAG.finditer(source):
            closing = f"</{m.group(1)}>"
            if closing in source or closing in added:
                return Markers(m.group(0), closing)
    return None


def supports_switch(template: str | None) -> bool:
    """Whether the chat template reads enable_thinking (Qwen3, SmolLM3), so thinking can be turned off there."""
    return bool(template) and "enable_thinking" in template


def opens_in_prompt(prompt: str, markers: Markers) -> bool:
    """True when the rendered prompt ends inside an open reasoning block (a template that writes `<think>` itself,
    perhaps with a first few words after it), so the reply starts as reasoning."""
    return prompt.rfind(markers.open) > prompt.rfind(markers.close)


def _partial(text: str, marker: str) -> int:
    """How many trailing characters of TEXT could begin MARKER (held back until the next piece decides)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


class Splitter:
    """Splits streamed reply text into (reasoning, answer) pieces as it arrives.

    A marker may arrive split across pieces: the start of one is held back until it is decided. The reasoning is
    taken to open only before any answer text (whitespace aside); the newlines the templates put around the markers
    are dropped. A reply that never closes its reasoning (max_tokens) leaves it all as reasoning.
    """

    def __init__(self, markers: Markers, thinking: bool = False):
        self.markers = markers
        self.thinking = thinking
        self.opened = thinking  # reasoning has begun (it only opens once)
        self.answer_started = False
        self.reasoning_started = False
        self._held = ""  # text not yet given out: a possible marker start, or whitespace whose side is undecided

    def feed(self, text: str) -> tuple[str, str]:
        """The (reasoning, answer) text that TEXT makes certain."""
        reasoning, answer = [], []
        buf = self._held + text
        self._held = ""
        while buf:
            if self.thinking:
                i = buf.find(self.markers.close)
                if i >= 0:
                    reasoning.append(self._reasoning_text(buf[:i], final=True))
                    buf = buf[i + len(self.markers.close):]
                    self.thinking = False
                    continue
                hold = _partial(buf, self.markers.close)
                body, self._held = buf[: len(buf) - hold], buf[len(buf) - hold:]
                # Trailing newlines wait: they belong to the reasoning only if more reasoning follows.
                kept = body.rstrip("\n")
                self._held = body[len(kept):] + self._held
                reasoning.append(self._reasoning_text(kept))
                break
            if not self.opened and not self.answer_started:
                stripped = buf.lstrip()
                if stripped.startswith(self.markers.open):
                    self.opened = self.thinking = True
                    buf = stripped[len(self.markers.open):]
                    continue
                if self.markers.open.startswith(stripped):  # maybe the start of the marker: wait for more
                    self._held = buf
                    break
            answer.append(self._answer_text(buf))
            break
        return "".join(reasoning), "".join(answer)

    def finish(self) -> tuple[str, str]:
        """What is still held at the end of the reply."""
        held, self._held = self._held, ""
        if self.thinking:
            return self._reasoning_text(held.rstrip("\n"), final=True), ""
        if not self.answer_started and self.markers.open.startswith(held.lstrip()):
            return "", self._answer_text(held) if held.strip() else ""
        return "", self._answer_text(held)

    def _reasoning_text(self, text: str, final: bool = False) -> str:
        if not self.reasoning_started:
            text = text.lstrip("\n")
            if text:
                self.reasoning_started = True
        return text.rstrip("\n") if final else text

    def _answer_text(self, text: str) -> str:
        if not self.answer_started:
            text = text.lstrip() if self.opened else text
            if text:
                self.answer_started = True
        return text


def split_chunks(chunks: Iterable[Chunk], markers: Markers, thinking: bool = False) -> Iterator[Chunk]:
    """CHUNKS with their text split into Chunk.reasoning and Chunk.text (the last chunk gets what was held back)."""
    splitter = Splitter(markers, thinking)
    for chunk in chunks:
        reasoning, text = splitter.feed(chunk.text)
        if chunk.finish_reason is not None:
            more_r, more_t = splitter.finish()
            reasoning, text = reasoning + more_r, text + more_t
        if reasoning or text or chunk.finish_reason is not None or chunk.notices or chunk.tool_calls:
            yield replace(chunk, text=text, reasoning=reasoning)


def split_text(text: str, markers: Markers | None, thinking: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a whole reply."""
    if markers is None:
        return "", text
    splitter = Splitter(markers, thinking)
    r1, t1 = splitter.feed(text)
    r2, t2 = splitter.finish()
    return r1 + r2, t1 + t2


class ThinkingBudget:
    """A logits processor that ends thinking after BUDGET reasoning tokens by forcing the closing marker's tokens
    (as llama.cpp's --reasoning-budget does). It follows the reply by token ids: the reasoning opens with OPEN_IDS
    (or at once, when the prompt opened it) and closes with CLOSE_IDS."""

    def __init__(self, budget: int, open_ids: Sequence[int], close_ids: Sequence[int], thinking: bool = False,
                 markers: Markers | None = None, decode=None):
        # With MARKERS and DECODE (ids -> text) it also follows the text: a model may write a marker in other tokens
        # than its encoding (no added token for it), and a reply that starts answering has no reasoning to cut.
        self.markers, self.decode, self._text = markers, decode, ""
        self.budget, self.open_ids, self.close_ids = budget, list(open_ids), list(close_ids)
        self.thinking, self.done = thinking, False
        self.spent = 0  # reasoning tokens so far
        self.forcing = 0  # how many closing-marker tokens are forced so far (0: not forcing)
        self._recent: list[int] = []

    def process(self, logits):
        """The logits, or only the next closing-marker token allowed once the budget is spent."""
        if self.thinking and not self.done and (self.forcing or self.spent >= self.budget):
            token = self.close_ids[self.forcing]
            forced = logits.new_full(logits.shape, float("-inf"))
            forced[token] = 0.0
            return forced
        return logits

    def accept(self, token: int) -> None:
        """Follow the reply: open, count, close."""
        self._recent = (self._recent + [token])[-max(len(self.open_ids), len(self.close_ids), 1):]
        if self.done:
            return
        follow = self.markers is not None and self.decode is not None
        if follow:
            self._text = (self._text + self.decode([token]))[-4 * len(self.markers.close) - 16:]
        if not self.thinking:
            if self.open_ids and self._recent[-len(self.open_ids):] == self.open_ids or (
                    follow and self._text.rstrip().endswith(self.markers.open)):
                self.thinking, self._text = True, ""
            elif follow and self._text.strip() and not self.markers.open.startswith(self._text.strip()):
                self.done = True  # the answer began without reasoning; a later marker in it is only text
            return
        if self.forcing or self.spent >= self.budget:
            self.forcing += 1
            if self.forcing == len(self.close_ids):
                self.thinking, self.done = False, True
            return
        self.spent += 1
        if self.close_ids and self._recent[-len(self.close_ids):] == self.close_ids or (
                follow and self.markers.close in self._text):
            self.thinking, self.done = False, True

    def is_done(self) -> bool:
        """Never ends the reply: the answer still follows."""
        return False
