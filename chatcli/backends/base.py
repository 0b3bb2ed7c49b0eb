"""The backend protocol: what the CLI, REPL and server need from anything that produces tokens.

The types it speaks (Message, SamplingParams, Chunk, Stats, Notice) live in chatcli.types. They stay importable from
here because plugins written against the earlier layout import them from this module (docs/backends.md showed that).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from chatcli.types import Chunk, Message, Notice, SamplingParams, Stats

__all__ = ["Backend", "Chunk", "Message", "Notice", "SamplingParams", "Stats"]


@runtime_checkable
class Backend(Protocol):
    """Anything that streams chat replies. Callers pass the whole history each turn.

    What a backend has to tell the user rides on the chunks as Notices. A backend that has something to say outside a
    reply (while loading) may also take an `on_notice: Callable[[Notice], None]` attribute, set by the caller.
    """

    name: str

    def models(self) -> list[str]: ...

    def load(self, model: str) -> None: ...

    def stream_chat(
        self, messages: list[Message], params: SamplingParams, *, chat_template: str | None = None, cancel=None
    ) -> Iterator[Chunk]: ...

    def stream_completion(self, prompt: str, params: SamplingParams, *, cancel=None) -> Iterator[Chunk]: ...

    def count_tokens(self, messages: list[Message], *, chat_template: str | None = None) -> int: ...

    def context_length(self) -> int: ...

    def close(self) -> None: ...
