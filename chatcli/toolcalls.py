"""Tool calls out of a model's reply text, piece by piece, in the format the model's chat template teaches.

The format is chosen from the template text, not the model name: a template that writes `<tool_call>` teaches the
hermes style (Qwen2.5, Qwen3, SmolLM3): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. A template with no
known format gives None, and the reply stays plain text. A call whose JSON does not parse is kept as text, so nothing
the model wrote is lost.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from chatcli.types import ToolCall

HERMES = "hermes"
LLAMA3 = "llama3"  # the reply is the bare JSON {"name": ..., "parameters": {...}}, maybe after <|python_tag|>
OPEN, CLOSE = "<tool_call>", "</tool_call>"


def detect_format(template: str | None) -> str | None:
    """The tool-call format TEMPLATE teaches, or None when it teaches none this module knows."""
    if template and OPEN in template:
        return HERMES
    if template and ("<|python_tag|>" in template or ("ipython" in template and '"parameters"' in template)):
        return LLAMA3
    return None


def _held_back(text: str, tag: str) -> int:
    """How many characters at the end of TEXT could be the start of TAG (so they wait for the next piece)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def _call(body: str, make_id: Callable[[], str]) -> ToolCall | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(make_id(), value["name"], json.dumps(args, ensure_ascii=False))


def _default_ids() -> Callable[[], str]:
    import uuid

    return lambda: "call_" + uuid.uuid4().hex[:24]


@dataclass
class HermesParser:
    """Feed reply pieces in order; each feed gives the text that is surely not part of a call, and the calls finished."""

    make_id: Callable[[], str] = field(default_factory=_default_ids)
    _buf: str = ""
    _inside: bool = False

    def feed(self, piece: str) -> tuple[str, list[ToolCall]]:
        self._buf += piece
        text, calls = [], []
        while True:
            if not self._inside:
                at = self._buf.find(OPEN)
                if at < 0:
                    keep = _held_back(self._buf, OPEN)
                    text.append(self._buf[:len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep:]
                    break
                text.append(self._buf[:at])
                self._buf = self._buf[at:]
                self._inside = True
            end = self._buf.find(CLOSE)
            if end < 0:
                break
            raw, self._buf = self._buf[:end + len(CLOSE)], self._buf[end + len(CLOSE):]
            self._inside = False
            call = _call(raw[len(OPEN):-len(CLOSE)], self.make_id)
            if call is None:
                text.append(raw)
            else:
                calls.append(call)
        return "".join(text), calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The rest at the end of the reply: a call the model left unclosed still counts if its JSON is whole."""
        rest, self._buf = self._buf, ""
        if self._inside:
            self._inside = False
            call = _call(rest[len(OPEN):], self.make_id)
            if call is not None:
                return "", [call]
        return rest, []


def bare_call(text: str, names: set[str]) -> ToolCall | None:
    """TEXT as one call when it is nothing but a hermes call's JSON naming one of NAMES (the tags left out)."""
    text = text.strip()
    text = text.removeprefix("<|python_tag|>")
    call = _call(text, _default_ids())
    return call if call is not None and call.name in names else None


def make_parser(template: str | None, make_id: Callable[[], str] | None = None) -> HermesParser | None:
    """A parser for the format TEMPLATE teaches, or None (plain text) when it teaches none."""
    # Llama 3 writes no tags: the tagless parser passes text through and the caller's bare-call check finds the call.
    if detect_format(template) not in (HERMES, LLAMA3):
        return None
    return HermesParser(make_id) if make_id else HermesParser()


def parse_all(template: str | None, text: str) -> tuple[str, list[ToolCall]]:
    """TEXT (a whole reply) as its plain text and its tool calls; ids are numbered call_0, call_1, ..."""
    counter = itertools.count()
    parser = make_parser(template, lambda: f"call_{next(counter)}")
    if parser is None:
        return text, []
    a, calls = parser.feed(text)
    b, more = parser.finish()
    return a + b, calls + more
