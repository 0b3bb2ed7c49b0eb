"""Build a session.Conversation from settings and flags, and the few views of it the REPL needs."""

from __future__ import annotations

from chatcli.errors import UsageError
from chatcli.repl.boot import SAMPLING_KEYS, Options, flag_sampling, model_label


def open_conversation(s, opts: Options, backend, ui=None):
    """Defaults from config/env < the prompt file < flags; --continue/--resume load a stored conversation."""
    from chatcli.backends.base import SamplingParams
    from chatcli.prompts import parse_variables
    from chatcli.session import Conversation

    # Settings that did not come from a flag are defaults the prompt file may override; flags override both.
    defaults = SamplingParams(**{k: s.get(k) for k in SAMPLING_KEYS}).validated()
    conv = Conversation(
        backend, model_label(s), s.get("prompt") or "default",
        variables=parse_variables(opts.var), defaults=defaults, overrides=flag_sampling(opts),
        system=opts.system, context_policy=s.get("context_policy"), save=bool(s.get("save")),
    )
    conv.flag_params = set(flag_sampling(opts))  # for /set's "from" column
    if opts.resume and opts.continue_:
        raise UsageError("--continue and --resume ID both pick a conversation; give one")
    if opts.resume:
        conv.load(parse_id(opts.resume))
    elif opts.continue_:
        from chatcli.history import History

        last = (conv.history or History()).last_id()
        if last is None:
            raise UsageError("--continue: there is no saved conversation yet; start one with `chatcli chat`")
        conv.load(last)
    return conv


def parse_id(value: str) -> int:
    """A conversation id as typed by the user."""
    try:
        conv_id = int(str(value).strip())
    except ValueError:
        raise UsageError(f"conversation id must be a number, got {value!r} (`chatcli history list` shows them)") from None
    if conv_id < 1:
        raise UsageError(f"conversation id must be >= 1, got {conv_id}")
    return conv_id


def param_source(conv, name: str) -> str:
    """default, prompt NAME, flag or /set."""
    source = conv.param_sources().get(name, "default")
    if source == "set":
        return "flag" if name in getattr(conv, "flag_params", ()) else "/set"
    return source


def last_reply(conv) -> str | None:
    """The last assistant message, or None."""
    return next((t.content for t in reversed(conv.turns) if t.role == "assistant"), None)


def take_notices(conv) -> list[str]:
    """Notices the conversation collected (context trimming, store warnings), each shown once."""
    out = list(conv.notices)
    conv.notices.clear()
    return out
