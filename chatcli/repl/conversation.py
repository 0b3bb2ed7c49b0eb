"""Build a session.Conversation from settings and flags, and the few views of it the REPL needs."""

from __future__ import annotations

from chatcli.errors import UsageError
from chatcli.repl.boot import Options, model_label, sampling
from chatcli.types import PARAM_NAMES


def open_conversation(s, opts: Options, backend, ui=None):
    """Defaults from config/env < the prompt file < flags; --continue/--resume load a stored conversation."""
    from chatcli.prompts import parse_variables
    from chatcli.session import Conversation

    # Packaged defaults < the prompt file < config file < CHATCLI_* < flags < /set. A value the user wrote down
    # (config, env, flag) beats the prompt file's; otherwise `temperature = 0.3` in config.toml would be silently
    # overridden by the shipped default prompt's 0.7, while `config show` says 0.3.
    chosen = {k: s.get(k) for k in PARAM_NAMES if s.sources.get(k, "default") != "default"}
    defaults = sampling(s)
    conv = Conversation(
        backend, model_label(s), choose_prompt(s, opts, backend),
        variables=parse_variables(opts.var), defaults=defaults, overrides=chosen,
        system=opts.system, context_policy=s.get("context_policy"), save=bool(s.get("save")),
    )
    if conv.prompt.think and s.sources.get("think", "default") == "default":  # the config, env or a flag beat it
        from chatcli.repl.boot import apply_think

        apply_think(backend, conv.prompt.think)
    # Where each override came from, for /set's "from" column; /set removes the entry.
    conv.param_origin = {k: s.sources[k] for k in chosen}
    if opts.resume:
        conv.load(parse_id(opts.resume))
    elif opts.continue_:
        from chatcli.history import History

        last = (conv.history or History()).last_id()
        if last is None:
            raise UsageError("--continue: there is no saved conversation yet; start one with `chatcli chat`")
        conv.load(last)
    return conv


def choose_prompt(s, opts: Options, backend) -> str:
    """The prompt the user chose, else the one the model suggests (a base model without a chat template gets
    `classic`, the plain conversation format), else `default`."""
    if opts.prompt or s.sources.get("prompt", "default") != "default":
        return s.get("prompt")
    suggest = getattr(backend, "suggested_prompt", None)
    return (suggest() if suggest else None) or s.get("prompt") or "default"


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
    """default, prompt NAME, config (PATH), env (VAR), flag or /set."""
    source = conv.param_sources().get(name, "default")
    if source == "set":
        return getattr(conv, "param_origin", {}).get(name, "/set")
    return source


def last_reply(conv) -> str | None:
    """The last assistant message, or None."""
    return next((t.content for t in reversed(conv.turns) if t.role == "assistant"), None)


def take_notices(conv) -> list[str]:
    """Notices the conversation collected (context trimming, store warnings), each shown once."""
    out = list(conv.notices)
    conv.notices.clear()
    return out
