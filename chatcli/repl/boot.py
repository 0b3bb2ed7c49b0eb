"""From command-line options to settings in effect, sampling parameters and a loaded backend (shared by chat and ask)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from chatcli.errors import UsageError
from chatcli.types import PARAM_NAMES


@dataclass
class Options:
    """What chat and ask were given on the command line; None means "not given", so settings decide."""

    model: str | None = None
    prompt: str | None = None
    system: str | None = None
    var: list[str] | None = None
    backend: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    dtype: str | None = None
    quant: str | None = None
    compile: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # the sampling flags given, by parameter name
    plain: bool = False
    no_save: bool = False
    continue_: bool = False
    resume: str | None = None
    context_policy: str | None = None
    vi: bool | None = None
    think: str | None = None  # auto, on, off
    hide_thinking: bool = False  # chat: never show the reasoning while it streams (/think still shows it)
    tool: list[str] | None = None  # -T NAME: tools to turn on
    all_tools: bool = False  # --tools
    yes_tools: bool = False  # --yes-tools: run calls without asking


def load_settings(opts: Options):
    """Packaged defaults < config file < CHATCLI_* < flags."""
    from chatcli import settings

    if opts.resume and opts.continue_:
        raise UsageError("--continue and --resume ID both pick a conversation; give one")
    flags = {f.name: getattr(opts, f.name) for f in fields(opts) if f.name in settings.TYPES}
    flags["save"] = False if opts.no_save else None
    # Each value is checked here, once (a bad one fails before a model is loaded): apply_flags runs the schema's check.
    return settings.load_settings().apply_flags(**flags, **opts.sampling)


def sampling(s):
    """SamplingParams from the settings in effect (flags included)."""
    from chatcli.types import SamplingParams

    return SamplingParams(**{k: s.get(k) for k in PARAM_NAMES})


def stderr_notice(notice) -> None:
    """Show a backend's notice on stderr, one line (stdout may carry an answer)."""
    import sys

    sys.stderr.write(f"chatcli: {notice.text}\n")
    sys.stderr.flush()


def open_backend(s, opts: Options, notify=stderr_notice):
    """Construct the backend named in the settings (flags > [backends.NAME] profile > settings) and load the model;
    what the backend says while it loads goes to NOTIFY (a backend that has nothing to say has no on_notice)."""
    from chatcli.backends import registry

    backend = registry.make_backend(s.get("backend"), s, base_url=opts.base_url, api_key=opts.api_key)
    if hasattr(backend, "on_notice"):
        backend.on_notice = notify
    backend.load(chosen_model(s))
    apply_think(backend, s.get("think"), s.get("think_budget"))
    return backend


THINK = {"auto": None, "on": True, "off": False}


def apply_think(backend, think: str | None, budget: int | None = None) -> None:
    """Hand the think setting (auto, on, off) and the thinking budget (0: none) to a backend that takes them."""
    if think is not None and hasattr(backend, "think"):
        backend.think = THINK[think]
    if budget is not None and hasattr(backend, "think_budget"):
        if budget < 0:
            raise UsageError(f"think_budget must be >= 0 (0: no limit), got {budget}")
        backend.think_budget = budget or None


def compile_in_background(backend) -> bool:
    """Have BACKEND build its compiled decode step in the background where it can (the local backend under `auto`
    with none stored): for a chat or a server, which last long enough to pay for it. The backend's notices say what
    it did; True when a build started."""
    start = getattr(backend, "compile_in_background", None)
    return bool(start()) if callable(start) else False


def chosen_model(s) -> str:
    """The model to load: the settings', or the backend profile's where the settings kept the default."""
    from chatcli.backends import registry

    return registry.model_for(s.get("backend"), s)


def model_label(s) -> str:
    """The model's name as the user knows it (a folder's name for a path)."""
    model = chosen_model(s)
    return os.path.basename(model.rstrip("/")) if os.sep in model else model


@contextlib.contextmanager
def cancel_on_sigint(cancel: threading.Event) -> Iterator[threading.Event]:
    """While a reply streams, Ctrl-C sets CANCEL (the backend stops within a token); a second Ctrl-C raises.

    The default handler would raise KeyboardInterrupt inside the backend, losing the partial reply and its stats.
    """
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def handler(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    cancel.clear()
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)
