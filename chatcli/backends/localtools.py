"""Tool calls out of a local model's streamed reply: text chunks in, text plus ToolCallDelta chunks out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from chatcli.toolcalls import bare_call, make_parser
from chatcli.types import Chunk, ToolCall, ToolCallDelta

TAG = "<|python_tag|>"  # Llama 3 may open a bare call with it


def _deltas(calls: list[ToolCall], first_index: int) -> tuple[ToolCallDelta, ...]:
    # OpenAI's streaming shape: id and name once, then the arguments (whole here: the parser sees a call only when
    # its JSON is complete, so a half-written call is never sent and taken back).
    out: list[ToolCallDelta] = []
    for i, c in enumerate(calls, first_index):
        out += [ToolCallDelta(i, id=c.id, name=c.name), ToolCallDelta(i, arguments=c.arguments)]
    return tuple(out)


def with_tool_calls(chunks: Iterator[Chunk], template: str | None, names: set[str] | None = None) -> Iterator[Chunk]:
    """CHUNKS with the tool calls the TEMPLATE's format describes taken out of the text; plain text if it has none.

    Small models (Qwen2.5-Coder-0.5B) often drop the tags and answer with the bare call JSON: a reply that starts
    with "{" is held back until it ends and counts as a call when it is one call of a tool in NAMES.
    """
    parser = make_parser(template)
    if parser is None:
        yield from chunks
        return
    count = 0
    held: str | None = ""  # the reply so far while it may be a bare call; None once it cannot be
    for chunk in chunks:
        text, calls = parser.feed(chunk.text)
        if held is not None:
            held += text
            head = held.lstrip()
            if head and not (TAG.startswith(head) or head.removeprefix(TAG).lstrip().startswith("{")):
                text, held = held, None
            else:
                text = ""
        if chunk.finish_reason is not None:
            rest, more = parser.finish()
            text, calls = text + rest, calls + more
            if held is not None:
                call = bare_call(held + rest, names or set()) if not calls else None
                text, calls = ("", [call]) if call else (held + rest, calls)
        deltas = _deltas(calls, count)
        count += len(calls)
        finish = chunk.finish_reason
        if finish == "stop" and count:
            finish = "tool_calls"
        if text or deltas or finish is not None or chunk.notices or chunk.reasoning:
            yield replace(chunk, text=text, tool_calls=chunk.tool_calls + deltas, finish_reason=finish)
