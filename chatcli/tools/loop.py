"""The tool loop of one turn: the model calls, the user allows or refuses, the results go back, the model goes on.

Front ends (the REPL, ask) give it three things: how to show a line, how to ask y/n/a, and how to stream a reply.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

from chatcli.tools.registry import Registry, ToolError
from chatcli.types import ToolCall
from chatcli.ui.sanitize import sanitize

REFUSED = "The user declined to run this tool call."
CANCELLED = "The user cancelled this tool call."
SHOWN_ARGS = 400  # characters of the arguments shown on the screen; the model's whole text is stored


def describe(call: ToolCall) -> str:
    """One safe line for the screen: the tool's name and its arguments (model text: sanitised, one line, clipped)."""
    args = " ".join(sanitize(call.arguments).split())
    if len(args) > SHOWN_ARGS:
        args = args[: SHOWN_ARGS - 1] + "…"
    return f"{' '.join(sanitize(call.name).split())}({args})"


def truncate(text: str, budget: int) -> tuple[str, str | None]:
    """TEXT cut to BUDGET characters, with the notice the model and the user read; (text, None) when it fits."""
    if len(text) <= budget:
        return text, None
    notice = f"[truncated: {budget} of {len(text)} characters shown]"
    return text[:budget] + "\n" + notice, notice


@dataclass
class Runner:
    """Runs the calls of one reply under the user's say-so."""

    registry: Registry
    note: Callable[[str], None]
    confirm: Callable[[ToolCall], str]  # "y", "n" or "a"
    yes: bool = False  # --yes-tools: never ask

    def execute(self, call: ToolCall) -> str:
        """The result text of CALL (errors and refusals are results too: the model reads them and goes on).
        KeyboardInterrupt (Ctrl-C while it runs) propagates: the caller cancels the rest."""
        self.note(f"tool call: {describe(call)}")
        tool = self.registry.tools.get(call.name)
        if tool is None or call.name not in self.registry.enabled:
            on = ", ".join(t.name for t in self.registry.active()) or "none"
            return f"Error: there is no tool named {call.name!r} (tools available: {on})."
        try:
            args = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as e:
            return f"Error: the arguments are not valid JSON ({e.msg} at character {e.pos})."
        if not isinstance(args, dict):
            return "Error: the arguments must be a JSON object."
        if not (self.yes or call.name in self.registry.always):
            answer = self.confirm(call)
            if answer == "a":
                self.registry.always.add(call.name)
            elif answer != "y":
                self.note("refused; the model is told so")
                return REFUSED
        try:
            text = tool.run(args, threading.Event())
        except ToolError as e:
            text = f"Error: {e}"
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a tool's own bug or a server fault is the model's to read, not a crash of the chat
            text = f"Error: {type(e).__name__}: {e}"
        text, notice = truncate(text, self.registry.budget)
        self.note(f"result: {len(text)} characters" + (f" {notice}" if notice else ""))
        return text


def follow(conv, answer, runner: Runner, reply: Callable) -> object:
    """While the last reply made tool calls, run them and stream the next reply (REPLY takes the chunks and returns
    an Answer), up to the registry's rounds; returns the last Answer. Ctrl-C in a call cancels the remaining calls,
    records them as cancelled and returns to the user."""
    rounds = 0
    while True:
        turn = conv.turns[-1] if conv.turns else None
        if turn is None or turn.role != "assistant" or not turn.tool_calls or answer.finish_reason in ("interrupted", "error"):
            return answer
        if rounds >= runner.registry.rounds:
            runner.note(f"[stopped after {rounds} tool rounds (/set tool_rounds N); the calls of the last reply did not run]")
            conv.add_tool_results([(c.id, "Not run: the limit of tool rounds was reached.") for c in turn.tool_calls])
            return answer
        rounds += 1
        results: list[tuple[str, str]] = []
        try:
            for call in turn.tool_calls:
                results.append((call.id, runner.execute(call)))
        except KeyboardInterrupt:
            done = {i for i, _ in results}
            conv.add_tool_results(results + [(c.id, CANCELLED) for c in turn.tool_calls if c.id not in done])
            runner.note("[tool call cancelled; the conversation is kept]")
            return answer
        answer = reply(conv.send_tool_results(results))


def ask_line(question: str, read: Callable[[], str], write: Callable[[str], None]) -> str:
    """Ask y/n/a until one is given; end of input is "n"."""
    while True:
        write(question)
        try:
            word = read().strip().lower()
        except EOFError:
            return "n"
        if word in ("y", "yes"):
            return "y"
        if word in ("n", "no", ""):
            return "n"
        if word in ("a", "always"):
            return "a"
