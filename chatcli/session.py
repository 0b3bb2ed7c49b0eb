"""Conversation: the messages, the system prompt, the sampling state and the context budget. No terminal I/O.

The UI drives it: `for chunk in conv.send(text): ...`, then prints and clears `conv.notices`. Every turn is written
to the History store as it completes. Sampling settings stack as: defaults (config/flags given as `defaults`) < the
prompt file < `overrides` (flags given as overrides, and /set).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from chatcli import types
from chatcli.budget import drop_notice, fit
from chatcli.errors import BackendError, ChatcliError, UsageError
from chatcli.history import History, Info, Turn, clean_text, open_store, to_markdown
from chatcli.prompts import Prompt, load_prompt, render_system
from chatcli.types import PARAM_NAMES, Chunk, Message, SamplingParams

__all__ = ["Conversation", "Turn"]

POLICIES = ("drop-oldest", "error")


class Conversation:
    """A chat with one backend and model. Methods raise ChatcliError subclasses; state is unchanged when they do."""

    def __init__(
        self,
        backend: Any,
        model: str,
        prompt: Prompt | str = "default",
        *,
        variables: dict[str, Any] | None = None,
        defaults: SamplingParams | None = None,
        overrides: dict[str, Any] | None = None,
        system: str | None = None,
        context_policy: str = "drop-oldest",
        history: History | None = None,
        save: bool = True,
    ) -> None:
        if context_policy not in POLICIES:
            raise UsageError(f"context policy must be one of {', '.join(POLICIES)}, got {context_policy!r}")
        self.backend = backend
        self.model = model
        self.variables = dict(variables or {})
        self.defaults = defaults or SamplingParams()
        self.overrides: dict[str, Any] = {}
        self.context_policy = context_policy
        self.turns: list[Turn] = []
        self.first = 0  # turns before this index have been dropped from what the model sees
        self.notices: list[str] = []
        self.cancel = threading.Event()
        self.conv_id: int | None = None
        self.save_enabled = save
        self._told: set[types.Notice] = set()  # backend notices already passed on: each is said once per chat
        self._params: tuple[tuple, SamplingParams] | None = None  # (what it was built from, the stack in effect)
        self._usage: int | None = None
        self._dropped: str | None = None  # this turn's drop notice, withdrawn if the turn fails
        self.response_format: dict | None = None  # structured output (chatcli.structured): None is plain text
        self.prompt = load_prompt(prompt) if isinstance(prompt, str) else prompt
        self._prompt_ref = prompt if isinstance(prompt, str) else str(self.prompt.path)
        self.system = render_system(self.prompt, self.variables, model)
        self.custom_system = False
        if system is not None:
            self.system, self.custom_system = clean_text(system), True
        for name, value in (overrides or {}).items():
            self._set_override(name, value)
        self.history = history
        if history is None and save:
            self.history, warning = open_store(True)
            if warning:
                self.notices.append(f"warning: {warning}")
        self.tools: list[dict] | None = None  # the tool schemas offered to the model (chatcli.tools sets them)
        self.params  # noqa: B018 - validate the stack now, not at the first turn

    # -- state ----------------------------------------------------------------------------------
    @property
    def params(self) -> SamplingParams:
        """The sampling settings in effect: defaults < prompt file < overrides (/set)."""
        # Built once per change, not on every read: the toolbar reads it at each redraw.
        key = (self.defaults, tuple(self.prompt.params.items()), tuple(self.overrides.items()))
        if self._params is None or self._params[0] != key:
            self._params = key, self.defaults.with_(**{**self.prompt.params, **self.overrides})
        return self._params[1]

    def param_sources(self) -> dict[str, str]:
        """Where each setting comes from: "default", "prompt NAME" or "set"."""
        return {n: "set" if n in self.overrides else f"prompt {self.prompt.name}" if n in self.prompt.params else "default"
                for n in PARAM_NAMES}

    @property
    def messages(self) -> list[Message]:
        """The whole conversation as messages, the system prompt first (dropped turns included)."""
        head = [Message("system", self.system)] if self.system else []
        return head + [_message(t) for t in self.turns]

    @property
    def chat_template(self) -> str | None:
        """The prompt file's turn template, which overrides the model's; None lets the backend choose."""
        return self.prompt.template

    def _count(self, messages: list[Message]) -> int:
        return self.backend.count_tokens(messages, chat_template=self.chat_template)

    def _exchanges(self, start: int, end: int) -> list[tuple[int, list[Message]]]:
        """turns[start:end] as (index of the user turn, user+reply messages), leaving out unanswered or empty
        exchanges (a crash mid-reply, a Ctrl-C before the first token), which would break role alternation."""
        out: list[tuple[int, list[Message]]] = []
        for i in range(start, end):
            t = self.turns[i]
            if t.role == "user":
                out.append((i, [Message("user", t.content)]))
            elif out and (t.content or t.tool_calls or t.role == "tool"):
                # The reasoning goes to the template too, which decides whether to show it (Qwen3's drops it).
                out[-1][1].append(_message(t))
        return [ex for ex in out if len(ex[1]) > 1]

    def token_usage(self) -> tuple[int, int]:
        """(tokens the model sees now, context length), for the toolbar."""
        ctx = self.backend.context_length()
        if self._usage is None:
            try:
                system = [Message("system", self.system)] if self.system else []
                pairs = self._exchanges(self.first, len(self.turns))
                self._usage = self._count(system + [m for _, ex in pairs for m in ex])
            except ChatcliError:
                return 0, ctx
        return self._usage, ctx

    # -- turns ----------------------------------------------------------------------------------
    def send(self, text: str) -> Iterator[Chunk]:
        """Add a user message and stream the reply. The reply is kept (marked "interrupted") when the caller stops
        iterating, cancel is set or KeyboardInterrupt arrives (re-raised). On errors the conversation is as before,
        except that a partial reply cut by a BackendError is kept, marked "error"."""
        text = clean_text(text)
        if not text.strip():
            raise UsageError("the message is empty; type something")
        user = Turn("user", text)
        self.turns.append(user)
        yield from self._reply(user, replaced=[])

    def retry(self) -> Iterator[Chunk]:
        """Regenerate the last reply (the old one is removed once the new one starts)."""
        last = max((i for i, t in enumerate(self.turns) if t.role == "user"), default=None)
        if last is None:
            raise UsageError("nothing to retry yet; send a message first")
        replaced = self.turns[last + 1 :]
        del self.turns[last + 1 :]
        yield from self._reply(None, replaced)

    def send_tool_results(self, results: list[tuple[str, str]]) -> Iterator[Chunk]:
        """Add the results (call id, text) of the last reply's tool calls and stream the model's next reply."""
        self.add_tool_results(results)
        yield from self._reply(None, replaced=[])

    def add_tool_results(self, results: list[tuple[str, str]]) -> None:
        """Add tool results without asking for a reply (a cancelled call: the user speaks next)."""
        for call_id, text in results:
            turn = Turn("tool", clean_text(text), tool_call_id=call_id)
            self.turns.append(turn)
            self._store(turn)
        self._usage = None

    def _reply(self, user: Turn | None, replaced: list[Turn]) -> Iterator[Chunk]:
        first_before, self._dropped = self.first, None
        try:
            messages, params = self._prepare()
        except BaseException:
            self._rollback(user, replaced, first_before)
            raise
        if user is not None:
            self._store(user)
        self.cancel.clear()
        pieces: list[str] = []
        thoughts: list[str] = []  # a thinking model's reasoning, kept apart from the answer
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
        stream = None
        finish, stats, keep = None, None, True
        try:
            # only when set: a backend without structured output or tool support never sees the key
            extra = {"response_format": self.response_format} if self.response_format else {}
            if self.tools:
                extra["tools"] = self.tools
            stream = self.backend.stream_chat(messages, params, chat_template=self.chat_template, cancel=self.cancel,
                                              **extra)
            for chunk in stream:
                for notice in chunk.notices:
                    if notice not in self._told:
                        self._told.add(notice)
                        self.notices.append(notice.text)
                pieces.append(chunk.text)
                thoughts.append(chunk.reasoning)
                for d in chunk.tool_calls:
                    call = calls.setdefault(d.index, ["", "", ""])
                    call[0], call[1], call[2] = d.id or call[0], d.name or call[1], call[2] + d.arguments
                if chunk.finish_reason:
                    finish, stats = chunk.finish_reason, chunk.stats
                yield chunk
            finish = finish or "stop"
        except BackendError:  # an HTTP fault mid-stream: keep what arrived, marked incomplete
            finish, keep = "error", bool("".join(pieces) or "".join(thoughts) or calls)
            raise
        except (GeneratorExit, KeyboardInterrupt):  # the caller stopped reading, or Ctrl-C
            finish = "interrupted"
            raise
        except BaseException:  # a template, numerical or usage error: the turn never happened
            keep = False
            raise
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()  # stops generation when the caller walked away
            if keep:
                made = tuple(types.ToolCall(c[0] or f"call_{i}", c[1], c[2] or "{}") for i, c in sorted(calls.items()))
                self._finish_reply(Turn("assistant", clean_text("".join(pieces)), finish or "interrupted", stats, params,
                                        self.model, self.prompt.name, reasoning=clean_text("".join(thoughts)),
                                        tool_calls=made), replaced)
            else:
                self._rollback(user, replaced, first_before, stored=True)

    def _prepare(self) -> tuple[list[Message], SamplingParams]:
        """Fit the window to the context; cap max_tokens at what is left."""
        params = self.params
        system = [Message("system", self.system)] if self.system else []
        # The exchange in progress: the user's message, and after tool calls the calls and their results.
        last_user = max((i for i, t in enumerate(self.turns) if t.role == "user"), default=len(self.turns) - 1)
        tail = [_message(t) for t in self.turns[last_user:] if t.role != "assistant" or t.content or t.tool_calls]
        pairs = self._exchanges(self.first, last_user)
        ctx = self.backend.context_length()
        got = fit(self._count, system, [ex for _, ex in pairs], tail, ctx, reserve=params.max_tokens,
                  policy=self.context_policy)
        if got.dropped:
            # Dropping is sticky: later turns do not bring old exchanges back, so the window only moves forward.
            self.first = pairs[got.dropped][0] if got.dropped < len(pairs) else last_user
            self._dropped = drop_notice(got.dropped, ctx)
            self.notices.append(self._dropped)
        self._usage = got.used
        if got.left < params.max_tokens:
            params = params.with_(max_tokens=max(1, got.left))
        return got.messages, params

    def _finish_reply(self, reply: Turn, replaced: list[Turn]) -> None:
        self.turns.append(reply)
        self._usage = None
        self._store(reply)
        self._forget(replaced)

    def _rollback(self, user: Turn | None, replaced: list[Turn], first: int, stored: bool = False) -> None:
        if user is not None and self.turns and self.turns[-1] is user:
            self.turns.pop()
            if stored:
                self._forget([user])
                self._drop_if_empty()
        self.turns.extend(replaced)
        self.first, self._usage = min(first, len(self.turns)), None
        if self._dropped in self.notices:  # nothing was dropped after all
            self.notices.remove(self._dropped)

    def undo(self) -> str:
        """Drop the last exchange; returns the user message that was removed."""
        last = max((i for i, t in enumerate(self.turns) if t.role == "user"), default=None)
        if last is None:
            raise UsageError("nothing to undo")
        removed = self.turns[last:]
        del self.turns[last:]
        self.first = min(self.first, len(self.turns))
        self._usage = None
        self._forget(removed)
        return removed[0].content

    def reset(self) -> None:
        """Start a new conversation with the same model, prompt and settings (the old one stays saved)."""
        self.turns, self.first, self.conv_id, self._usage = [], 0, None, None

    # -- settings -------------------------------------------------------------------------------
    def _set_override(self, name: str, value: Any) -> None:
        trial = {**self.overrides, name: types.check(name, value)}  # ParamError names the parameter and its range
        self.overrides = trial

    def set_param(self, name: str, value: str) -> Any:
        """/set NAME VALUE: parse, validate and apply; "default" removes the override. Returns the value in effect."""
        try:
            types.spec_of(name)  # an unknown name is an error that suggests the closest one
            if value.strip().lower() == "default":
                self.overrides.pop(name, None)
            else:
                self._set_override(name, types.parse(name, value))
        except types.ParamError as e:  # /set is an edge: the schema's message, as a usage error of the chat
            raise UsageError(str(e)) from None
        return getattr(self.params, name)

    def set_system(self, text: str) -> None:
        """Replace the system prompt for this conversation ("" removes it)."""
        self.system, self.custom_system, self._usage = clean_text(text).strip(), True, None
        self._update_store(system=self.system)

    def switch_prompt(self, name: str) -> Prompt:
        """Use prompt NAME from now on, keeping the conversation; on a bad file nothing changes (LoadError)."""
        prompt = load_prompt(name)
        system = render_system(prompt, self.variables, self.model)
        old = self.prompt
        self.prompt = prompt
        try:
            self.params  # noqa: B018 - a /set override may clash with nothing, but the stack must stay valid
        except UsageError:
            self.prompt = old
            raise
        self.system, self.custom_system, self._usage = system, False, None
        self._prompt_ref = name
        self._update_store(prompt=prompt.name, system=system)
        return prompt

    def reload_prompt(self) -> Prompt:
        """Re-read the current prompt file after an edit (the previous prompt stays on error)."""
        return self.switch_prompt(self._prompt_ref)

    # -- the store ------------------------------------------------------------------------------
    def _guard_store(self, action) -> Any:
        if self.history is None:
            return None
        try:
            return action(self.history)
        except ChatcliError as e:
            self.notices.append(f"warning: {e}; the chat goes on without saving")
            self.history = None
            return None

    def _store(self, turn: Turn) -> None:
        if not self.save_enabled:
            return

        def write(h: History) -> None:
            if self.conv_id is None:
                self.conv_id = h.create(self.model, self.prompt.name, self.system)
            h.add_turn(self.conv_id, turn)

        self._guard_store(write)

    def _drop_if_empty(self) -> None:
        """A conversation whose first turn failed leaves nothing in `history list`: the store gets a conversation
        with its first completed exchange (the user's message is written first, so a crash mid-reply keeps it)."""
        if self.conv_id is not None and self.save_enabled and not any(t.id is not None for t in self.turns):
            conv_id, self.conv_id = self.conv_id, None
            self._guard_store(lambda h: h.remove(conv_id))

    def _forget(self, turns: list[Turn]) -> None:
        ids = [t.id for t in turns if t.id is not None]
        if ids and self.conv_id is not None and self.save_enabled:
            self._guard_store(lambda h: h.delete_turns(self.conv_id, ids))

    def _update_store(self, **changes: Any) -> None:
        if self.conv_id is not None and self.save_enabled:
            self._guard_store(lambda h: h.update(self.conv_id, **changes))

    def save(self, title: str | None = None) -> int:
        """/save: store the conversation now (even under --no-save, which it turns off); returns its id."""
        if self.history is None:
            self.history = History()  # StoreError tells the user why it cannot be saved
        self.save_enabled = True
        if self.conv_id is None:
            self.conv_id = self.history.create(self.model, self.prompt.name, self.system, title)
        for t in self.turns:
            if t.id is None:
                self.history.add_turn(self.conv_id, t)
        if title:
            self.history.update(self.conv_id, title=title)
        return self.conv_id

    def load(self, conv_id: int) -> Info:
        """Continue stored conversation CONV_ID: its turns, system prompt and (if it still exists) its prompt file."""
        if self.history is None:
            self.history = History()
        info, turns = self.history.get(conv_id)
        if info.prompt and info.prompt != self.prompt.name:
            try:
                self.prompt = load_prompt(info.prompt)
            except ChatcliError as e:
                self.notices.append(f"prompt {info.prompt!r} of that conversation is unavailable ({e}); keeping {self.prompt.name!r}")
        if info.model and info.model != self.model:
            self.notices.append(f"that conversation was with {info.model}; continuing with {self.model}")
        self.turns, self.first, self.conv_id, self._usage = turns, 0, conv_id, None
        self.system, self.custom_system = info.system or "", True
        self.save_enabled = True
        return info

    def transcript(self) -> str:
        """The conversation so far as Markdown (dropped turns included)."""
        now = time.time()
        info = Info(self.conv_id or 0, self.turns[0].content[:60] if self.turns else "New conversation", self.model,
                    self.prompt.name, self.system, self.turns[0].created if self.turns else now, now, len(self.turns))
        return to_markdown(info, self.turns)


def _message(t: Turn) -> Message:
    """A stored turn as the backend's Message (tool calls and the answered call id included)."""
    return Message(t.role, t.content, reasoning=t.reasoning, tool_calls=t.tool_calls, tool_call_id=t.tool_call_id)
