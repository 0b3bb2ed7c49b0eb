"""Tool calls out of a model's reply text, piece by piece, in the format the model's chat template teaches.

The format is chosen from the template text, not the model name: a template that writes `<tool_call>` teaches the
hermes style (Qwen2.5, Qwen3, SmolLM3): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; one that writes
`[TOOL_CALLS]` the Mistral style, where the calls run from that marker to the end of the reply. A template with no
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
MISTRAL = "mistral"
MISTRAL_TAG, MISTRAL_ARGS = "[TOOL_CALLS]", "[ARGS]"
OPEN, CLOSE = "<tool_call>", "</tool_call>"


def detect_format(template: str | None) -> str | None:
    """The tool-call format TEMPLATE teaches, or None when it teaches none this module knows."""
    if template and OPEN in template:
        return HERMES
    if template and MISTRAL_TAG in template:
        return MISTRAL
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


def mistral_ids() -> Callable[[], str]:
    """Mistral's templates refuse a tool call id that is not 9 letters and digits, so its calls get such ids."""
    import secrets
    import string

    alphabet = string.ascii_letters + string.digits
    return lambda: "".join(secrets.choice(alphabet) for _ in range(9))


@dataclass
class MistralParser:
    """Text up to `[TOOL_CALLS]`; from there to the end of the reply, the calls, read when the reply ends.

    Two shapes after the marker: the v3 JSON list `[{"name": ..., "arguments": {...}}, ...]`, and the v11+
    `name[ARGS]{...}` (one such per marker). Whatever does not parse goes back as text, marker included.
    """

    make_id: Callable[[], str] = field(default_factory=mistral_ids)
    _buf: str = ""
    _tail: str | None = None  # everything after the first marker, once seen

    def feed(self, piece: str) -> tuple[str, list[ToolCall]]:
        if self._tail is not None:
            self._tail += piece
            return "", []
        self._buf += piece
        at = self._buf.find(MISTRAL_TAG)
        if at >= 0:
            text, self._tail, self._buf = self._buf[:at], self._buf[at + len(MISTRAL_TAG):], ""
            return text, []
        keep = _held_back(self._buf, MISTRAL_TAG)
        text, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
        return text, []

    def finish(self) -> tuple[str, list[ToolCall]]:
        if self._tail is None:
            rest, self._buf = self._buf, ""
            return rest, []
        tail, self._tail = self._tail, None
        calls = self._calls(tail)
        return ("", calls) if calls else (MISTRAL_TAG + tail, [])

    def _calls(self, tail: str) -> list[ToolCall] | None:
        if MISTRAL_ARGS in tail:  # v11+: name[ARGS]{...}[TOOL_CALLS]name[ARGS]{...}
            calls = []
            for part in tail.split(MISTRAL_TAG):
                name, _, args = part.partition(MISTRAL_ARGS)
                call = _call(json.dumps({"name": name.strip(), "arguments": _json_or_none(args)}), self.make_id)
                if call is None or not call.name:
                    return None
                calls.append(call)
            return calls
        value = _json_or_none(tail)
        items = value if isinstance(value, list) else [value]
        calls = [_call(json.dumps(item), self.make_id) if isinstance(item, dict) else None for item in items]
        return calls if calls and None not in calls else None


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


# Between a call's JSON tokens: what the models write (one space, maybe a newline and indentation), never unbounded.
CALL_WHITESPACE = r"\n? {0,8}"


def call_grammar(template: str | None, tools: list[dict], token_of: Callable[[str], int | None]) -> str | None:
    """A grammar (llguidance's Lark dialect) that admits one call of one of TOOLS, written in the format TEMPLATE
    teaches, with arguments that match the tool's JSON Schema: tool_choice "required" or a named tool, enforced.

    token_of(tag): the id of the one token that spells TAG when the tokenizer has it as an added token (the grammar
    must then name the token: its text is not matched byte by byte), else None. None when the format has no grammar
    here: Mistral's [TOOL_CALLS] is a control token whose id the template cannot tell us, and no format, no call.
    """
    kind = detect_format(template)
    if kind not in (HERMES, LLAMA3):
        return None
    key = "arguments" if kind == HERMES else "parameters"
    calls = [{"type": "object", "additionalProperties": False, "required": ["name", key],
              "properties": {"name": {"const": t["function"]["name"]},
                             key: t["function"].get("parameters") or {"type": "object"}}} for t in tools]
    schema = {"x-guidance": {"whitespace_pattern": CALL_WHITESPACE}, "anyOf": calls}
    if kind == LLAMA3:
        return "start: call\ncall: %json " + json.dumps(schema)
    return f"start: {_tag(OPEN, token_of)} \"\\n\" call \"\\n\" {_tag(CLOSE, token_of)}\ncall: %json {json.dumps(schema)}"


def _tag(tag: str, token_of: Callable[[str], int | None]) -> str:
    """TAG in the grammar: its added token, or its text where the tokenizer spells it in pieces."""
    token = token_of(tag)
    return json.dumps(tag) if token is None else f"(<[{token}]> | {json.dumps(tag)})"


def bare_call(text: str, names: set[str]) -> ToolCall | None:
    """TEXT as one call when it is nothing but a hermes call's JSON naming one of NAMES (the tags left out)."""
    text = text.strip()
    text = text.removeprefix("<|python_tag|>")
    call = _call(text, _default_ids())
    return call if call is not None and call.name in names else None


def make_parser(template: str | None, make_id: Callable[[], str] | None = None) -> HermesParser | MistralParser | None:
    """A parser for the format TEMPLATE teaches, or None (plain text) when it teaches none."""
    kind = detect_format(template)
    if kind == MISTRAL:
        return MistralParser(make_id) if make_id else MistralParser()
    # Llama 3 writes no tags: the tagless parser passes text through and the caller's bare-call check finds the call.
    if kind not in (HERMES, LLAMA3):
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
