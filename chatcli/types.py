"""The core vocabulary: messages, streamed chunks, notices, stats, and the one schema of the sampling parameters.

A leaf module (it imports nothing from chatcli), so the engine, the backends, the session, the store and the server
share it without depending on each other. Every edge that takes a sampling value from the outside world (flags, the
config file, CHATCLI_* variables, prompt front matter, /set, HTTP requests, the engine's sampler) checks it through
`check` or `parse` here, so each reports the same message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

CHAT_ROLES = ("system", "user", "assistant")
ROLES = (*CHAT_ROLES, "tool")  # "tool": a tool call's result


# -- messages and chunks -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolCall:
    """A tool call the model made: its id, the tool's name and the arguments as the JSON text the model wrote."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True)
class Message:
    """One chat message. An assistant message may carry reasoning (kept apart from content) and tool calls;
    a "tool" message is the result of the call named by tool_call_id."""

    role: str
    content: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call INDEX names id and name, later ones add arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Notice:
    """Something a backend tells the user, out of band of the reply text.

    kind: "info" (progress, a changed mode), "warning" (it works, but not as asked: slower, or adapted).
    """

    kind: str
    text: str


@dataclass
class Stats:
    """Token counts and timings of one reply (the engine fills one in as it generates; backends pass it on)."""

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
    """A piece of a streamed reply; the last chunk carries finish_reason and stats.

    text and reasoning are the new content and reasoning text; tool_calls the new tool-call pieces; notices what the
    backend tells the user now; probs the per-token probability records of the tokens in text (/probs on).
    """

    text: str = ""
    finish_reason: str | None = None  # "stop", "length", "interrupted", "error", "tool_calls"
    stats: Stats | None = None
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    notices: tuple[Notice, ...] = ()
    probs: tuple[dict, ...] = field(default=(), compare=False)


# -- the sampling parameters: declared once ------------------------------------------------------------------------

class ParamError(ValueError):
    """A sampling value of the wrong type or out of range; the message names the parameter and its legal range."""

    exit_code = 2  # bad usage, Click's convention: the CLI maps it like UsageError

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Spec:
    """What one sampling parameter takes: the schema every edge derives from."""

    kind: type  # float, int, or tuple (stop: strings)
    rule: str  # the legal range in words, as every edge reports it
    ok: Callable[[Any], bool]  # the range check, on a value of the right kind
    help: str  # for --help and `/set`
    metavar: str
    short: str | None = None  # a one-letter flag
    nullable: bool = False  # None is a legal value (seed: draw a fresh one)
    api_default: Any = ...  # the OpenAI API's default where it differs from ours (the server follows the API)


def _param(default: Any, spec: Spec) -> Any:
    return field(default=default, metadata={"spec": spec})


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings. The names are the same in flags, the config file, CHATCLI_*, prompt files, /set and HTTP;
    construction checks every value, so a SamplingParams is always in range."""

    temperature: float = _param(0.7, Spec(float, ">= 0 (0 is greedy)", lambda x: x >= 0,
                                          "0 is greedy; higher is more random.", "TEMP", "-t", api_default=1.0))
    top_p: float = _param(0.95, Spec(float, "in (0, 1]", lambda x: 0 < x <= 1,
                                     "Nucleus sampling, in (0, 1].", "P", api_default=1.0))
    top_k: int = _param(0, Spec(int, ">= 0 (0 disables it)", lambda x: x >= 0,
                                "Keep the K likeliest tokens (0: off).", "K"))
    min_p: float = _param(0.0, Spec(float, "in [0, 1]", lambda x: 0 <= x <= 1,
                                    "Drop tokens below MIN_P × the top probability (0: off).", "P"))
    repeat_penalty: float = _param(1.0, Spec(float, "> 0 (1 disables it)", lambda x: x > 0,
                                             "Penalise repeated tokens (1: off).", "X"))
    # A 64-bit generator seed: a larger one would overflow it deep in the engine instead of failing here.
    seed: int | None = _param(None, Spec(int, "in [0, 2^64)", lambda x: 0 <= x < 1 << 64,
                                         "Random seed, for reproducible replies.", "N", nullable=True))
    # The API's default is "as long as the context allows": a cap the context always reaches first.
    max_tokens: int = _param(1024, Spec(int, "in [1, 2^31)", lambda x: 1 <= x < 1 << 31, "Most tokens in one reply.", "N",
                                        api_default=1 << 30))
    stop: tuple[str, ...] = _param((), Spec(tuple, "a non-empty string or a list of them", lambda x: all(x),
                                            "Stop when the reply contains this text (repeatable).", "TEXT"))

    def __post_init__(self) -> None:
        for name in PARAM_NAMES:
            object.__setattr__(self, name, check(name, getattr(self, name)))

    def with_(self, **changes: Any) -> SamplingParams:
        """A copy with some fields changed (each checked; ParamError names a bad one)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (stop as a list)."""
        return {name: (list(v) if isinstance(v, tuple) else v) for name, v in ((n, getattr(self, n)) for n in PARAM_NAMES)}


PARAMS: dict[str, Spec] = {f.name: f.metadata["spec"] for f in fields(SamplingParams)}
PARAM_NAMES: tuple[str, ...] = tuple(PARAMS)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(SamplingParams)}

_KIND_WORDS = {float: "a number", int: "an integer", tuple: "a non-empty string or a list of them"}


def _kind_error(name: str, value: Any) -> ParamError:
    spec = PARAMS[name]
    return ParamError(name, f"{name} must be {_KIND_WORDS[spec.kind]}, got {value!r}")


def range_error(name: str, value: Any) -> ParamError:
    """The one message for VALUE outside NAME's legal range."""
    return ParamError(name, f"{name} must be {PARAMS[name].rule}; got {value!r}")


def check(name: str, value: Any) -> Any:
    """VALUE for parameter NAME, normalised (an int for a float is a float, one stop string a tuple); ParamError
    names the parameter, what it takes and what it got."""
    spec = spec_of(name)
    if value is None and spec.nullable:
        return None
    if spec.kind is tuple:
        stops = (value,) if isinstance(value, str) else value
        if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) for s in stops):
            raise _kind_error(name, value)
        if not spec.ok(stops):
            raise range_error(name, value)
        return tuple(stops)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _kind_error(name, value)
    if spec.kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise _kind_error(name, value)
            value = int(value)
    elif not math.isfinite(value):
        raise range_error(name, value)
    else:
        value = float(value)
    if not spec.ok(value):
        raise range_error(name, value)
    return value


def parse(name: str, text: str) -> Any:
    """A value for NAME typed as text (CHATCLI_*, /set): "none" clears seed, stop takes a string with backslash
    escapes or a JSON list of strings. Checked as `check` does."""
    spec = spec_of(name)
    text = text.strip()
    if spec.nullable and text.lower() in ("", "none", "random", "-"):
        return None
    if spec.kind is tuple:
        if text.lower() in ("", "none", "[]"):
            return ()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            return check(name, value)
        # Backslash escapes, so `/set stop \n\n` means two newlines.
        return check(name, text.encode("utf-8", "surrogatepass").decode("unicode_escape", "replace") if "\\" in text else text)
    try:
        number: Any = float(text) if spec.kind is float else int(text)
    except ValueError:
        raise _kind_error(name, text) from None
    return check(name, number)


def api_default(name: str) -> Any:
    """NAME's value when an OpenAI API request leaves it out."""
    api = PARAMS[name].api_default
    return DEFAULTS[name] if api is ... else api


def spec_of(name: str) -> Spec:
    """The schema entry for NAME; ParamError suggests the closest name for a typo."""
    try:
        return PARAMS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, PARAM_NAMES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ParamError(name, f"unknown parameter {name!r}; {hint}choose from {', '.join(PARAM_NAMES)}") from None
