"""The backend protocol: what the CLI, REPL and server need from anything that produces tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterator, Protocol, runtime_checkable

from chatcli.errors import UsageError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; the names are the same in flags, config, prompt files and /set."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int = 1024
    stop: tuple[str, ...] = ()

    def validated(self) -> "SamplingParams":
        """Return self, or raise UsageError naming the parameter and its legal range."""
        check_sampling(self)
        return self

    def with_(self, **changes) -> "SamplingParams":
        """A copy with some fields changed, validated."""
        if "stop" in changes and changes["stop"] is not None:
            stop = changes["stop"]
            changes["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        return replace(self, **changes).validated()


RANGES = {
    "temperature": "temperature must be >= 0 (0 is greedy)",
    "top_p": "top_p must be in (0, 1]",
    "top_k": "top_k must be >= 0 (0 disables it)",
    "min_p": "min_p must be in [0, 1]",
    "repeat_penalty": "repeat_penalty must be > 0 (1 disables it)",
    "max_tokens": "max_tokens must be >= 1",
    "seed": "seed must be an integer >= 0",
}


def check_sampling(p: SamplingParams) -> None:
    """Raise UsageError for the first out-of-range parameter."""

    def bad(name: str) -> None:
        raise UsageError(f"{RANGES[name]}; got {getattr(p, name)!r}")

    def finite(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not finite(p.temperature) or p.temperature < 0:
        bad("temperature")
    if not finite(p.top_p) or not 0 < p.top_p <= 1:
        bad("top_p")
    if not isinstance(p.top_k, int) or isinstance(p.top_k, bool) or p.top_k < 0:
        bad("top_k")
    if not finite(p.min_p) or not 0 <= p.min_p <= 1:
        bad("min_p")
    if not finite(p.repeat_penalty) or p.repeat_penalty <= 0:
        bad("repeat_penalty")
    if not isinstance(p.max_tokens, int) or isinstance(p.max_tokens, bool) or p.max_tokens < 1:
        bad("max_tokens")
    if p.seed is not None and (not isinstance(p.seed, int) or isinstance(p.seed, bool) or p.seed < 0):
        bad("seed")


@dataclass(frozen=True)
class Stats:
    """Timings and token counts of one reply."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float = 0.0
    prompt_tps: float = 0.0
    decode_tps: float = 0.0
    total_s: float = 0.0
    estimated: bool = False  # token counts are estimates (a server that cannot tokenize)


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed text; the last chunk carries finish_reason and stats."""

    text: str
    finish_reason: str | None = None  # "stop", "length", "interrupted", "error"
    stats: Stats | None = None
    extra: dict = field(default_factory=dict, compare=False)


@runtime_checkable
class Backend(Protocol):
    """Anything that streams chat replies. Callers pass the whole history each turn."""

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
