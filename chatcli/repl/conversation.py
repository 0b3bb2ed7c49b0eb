"""The REPL's view of a conversation. Interim: a minimal in-memory one until chatcli.session lands (issue 5);
then this module only adapts session.Conversation to the names the REPL and ask use."""

from __future__ import annotations

import threading
from typing import Iterator

from chatcli.backends.base import Chunk, Message, SamplingParams
from chatcli.errors import UsageError
from chatcli.history import Turn
from chatcli.repl.boot import SAMPLING_KEYS, Options, flag_sampling, model_label


class SimpleConversation:
    """Messages, system prompt and sampling state; streams replies through the backend. No terminal I/O."""

    def __init__(self, backend, *, model: str, prompt_name: str | None, system: str | None, params: SamplingParams,
                 sources: dict[str, str], variables: dict[str, str], flags: dict) -> None:
        self.backend = backend
        self.model = model
        self.prompt_name = prompt_name
        self._system_override = system
        self.variables = variables
        self.flags = flags
        self.base_params = params
        self.sources = dict(sources)
        self.params = params
        self.turns: list[Turn] = []
        self._notices: list[str] = []
        self._system = ""
        if prompt_name:
            self.use_prompt(prompt_name)

    # -- prompt and params ------------------------------------------------------------------------------
    def use_prompt(self, name: str) -> None:
        """Switch prompt files; its sampling settings apply unless a flag or /set chose them."""
        from chatcli.prompts import load_prompt, render_system

        prompt = load_prompt(name)
        system = render_system(prompt, self.variables, model=self.model)
        changes = {k: v for k, v in prompt.params.items() if self.sources.get(k) not in ("flag", "/set")}
        params = self.params.with_(**changes) if changes else self.params
        self.prompt_name, self._system, self.params = prompt.name, system, params
        for k in changes:
            self.sources[k] = f"prompt {prompt.name}"

    def reload_prompt(self) -> None:
        """Re-read the current prompt file."""
        if not self.prompt_name:
            raise UsageError("no prompt file in use; /prompt NAME picks one")
        self.use_prompt(self.prompt_name)

    def system_text(self) -> str:
        """The system prompt in effect."""
        return self._system_override if self._system_override is not None else self._system

    def set_system(self, text: str) -> None:
        """Replace the system prompt for the rest of the conversation."""
        self._system_override = text

    def set_params(self, **changes) -> None:
        """/set: validated, and it wins over the prompt file."""
        self.params = self.params.with_(**changes)
        for k in changes:
            self.sources[k] = "/set"

    def param_source(self, name: str) -> str:
        """Where a sampling value came from."""
        return self.sources.get(name, "default")

    def set_model(self, name: str) -> None:
        """The backend already loaded it; the system prompt's {{ model }} follows."""
        self.model = model_label_of(name)
        if self.prompt_name:
            self.use_prompt(self.prompt_name)

    # -- turns ----------------------------------------------------------------------------------------
    def messages(self) -> list[Message]:
        """What the backend sees."""
        system = self.system_text()
        head = [Message("system", system)] if system else []
        return head + [Message(t.role, t.content) for t in self.turns]

    def send(self, text: str, cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """Add the user's message and stream the reply; the partial reply is kept when interrupted."""
        self.turns.append(Turn("user", text))
        return self._reply(cancel)

    def retry(self, cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """Drop the last reply and generate it again."""
        if not self.turns:
            raise UsageError("nothing to retry yet")
        if self.turns[-1].role == "assistant":
            self.turns.pop()
        return self._reply(cancel)

    def _reply(self, cancel) -> Iterator[Chunk]:
        messages = self.messages()
        turn = Turn("assistant", "", finish_reason="interrupted", params=self.params, model=self.model, prompt=self.prompt_name)
        self.turns.append(turn)
        try:
            for chunk in self.backend.stream_chat(messages, self.params, cancel=cancel):
                turn.content += chunk.text
                if chunk.finish_reason:
                    turn.finish_reason, turn.stats = chunk.finish_reason, chunk.stats
                yield chunk
        except BaseException:
            turn.finish_reason = "error" if turn.finish_reason != "interrupted" else "interrupted"
            raise

    def undo(self) -> bool:
        """Drop the last exchange."""
        if not self.turns:
            return False
        while self.turns and self.turns.pop().role != "user":
            pass
        return True

    def reset(self) -> None:
        """Forget the messages; keep prompt and settings."""
        self.turns = []

    def transcript(self) -> list[Turn]:
        """The messages so far."""
        return list(self.turns)

    def last_reply(self) -> str | None:
        """The last assistant message."""
        return next((t.content for t in reversed(self.turns) if t.role == "assistant"), None)

    def tokens_used(self) -> int:
        """Tokens of the rendered conversation."""
        return self.backend.count_tokens(self.messages())

    def take_notices(self) -> list[str]:
        """Notices for the user (context trimming), once each."""
        out, self._notices = self._notices, []
        return out

    # -- the store (interim: not saved) ------------------------------------------------------------------
    def save(self, title: str | None = None) -> int:
        """Name the conversation in the history."""
        raise UsageError("saving conversations arrives with chatcli.session")

    def saved_id(self) -> int | None:
        """The store's id for this conversation, if saved."""
        return None

    def list_saved(self, limit: int = 20):
        """Saved conversations, newest first."""
        from chatcli.history import History

        return History().list(limit=limit)

    def load(self, conv_id: str) -> None:
        """Continue a saved conversation."""
        raise UsageError("loading conversations arrives with chatcli.session")

    def close(self) -> None:
        """Nothing to release."""


def model_label_of(name: str) -> str:
    """A folder's name for a path, else the name."""
    return name.rstrip("/").rsplit("/", 1)[-1]


def open_conversation(s, opts: Options, backend, ui) -> SimpleConversation:
    """A conversation configured from settings and flags."""
    from chatcli.prompts import parse_variables

    params = SamplingParams(**{k: s.get(k) for k in SAMPLING_KEYS}, stop=tuple(opts.stop or ())).validated()
    sources = {k: s.sources.get(k, "default") for k in SAMPLING_KEYS}
    sources.update({k: "flag" for k in flag_sampling(opts)})
    return SimpleConversation(backend, model=model_label(s), prompt_name=s.get("prompt"), system=opts.system,
                              params=params, sources=sources, variables=parse_variables(opts.var), flags=flag_sampling(opts))
