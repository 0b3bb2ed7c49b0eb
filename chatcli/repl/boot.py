"""From command-line options to settings in effect, sampling parameters and a loaded backend (shared by chat and ask)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass, fields
from typing import Any, Iterator

from chatcli.errors import UsageError

DTYPES = ("auto", "float32", "bfloat16")
POLICIES = ("drop-oldest", "error")
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens")


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
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    plain: bool = False
    no_save: bool = False
    continue_: bool = False
    resume: str | None = None
    context_policy: str | None = None
    vi: bool | None = None


def load_settings(opts: Options):
    """Packaged defaults < config file < CHATCLI_* < flags."""
    from chatcli import settings

    if opts.dtype is not None and opts.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}; got {opts.dtype!r}")
    if opts.context_policy is not None and opts.context_policy not in POLICIES:
        raise UsageError(f"--context-policy must be one of {', '.join(POLICIES)}; got {opts.context_policy!r}")
    if opts.resume and opts.continue_:
        raise UsageError("--continue and --resume ID both pick a conversation; give one")
    flags = {f.name: getattr(opts, f.name) for f in fields(opts) if f.name in settings.TYPES}
    flags["save"] = False if opts.no_save else None
    s = settings.load_settings().apply_flags(**flags)
    sampling(s, opts)  # a bad value fails here, before a model is loaded
    return s


def flag_sampling(opts: Options) -> dict[str, Any]:
    """Only the sampling values given as flags: they win over a prompt file's settings."""
    given = {k: getattr(opts, k) for k in SAMPLING_KEYS if getattr(opts, k) is not None}
    if opts.stop:
        given["stop"] = tuple(opts.stop)
    return given


def sampling(s, opts: Options):
    """SamplingParams from the settings in effect (flags included), validated."""
    from chatcli.backends.base import SamplingParams

    params = SamplingParams(**{k: s.get(k) for k in SAMPLING_KEYS}, stop=tuple(opts.stop or ()))
    return params.validated()


def open_backend(s, opts: Options):
    """Construct the backend named in the settings (flags > [backends.NAME] profile > settings) and load the model."""
    from chatcli.backends import registry

    backend = registry.make_backend(s.get("backend"), s, base_url=opts.base_url, api_key=opts.api_key)
    backend.load(s.get("model"))
    return backend


def compile_in_background(backend) -> str | None:
    """Have BACKEND build its compiled decode step in the background where it can (the local backend under `auto`
    with none stored): for a chat or a server, which last long enough to pay for it. A line for the user, or None."""
    start = getattr(backend, "compile_in_background", None)
    return start() if callable(start) else None


def model_label(s) -> str:
    """The model's name as the user knows it (a folder's name for a path)."""
    model = str(s.get("model"))
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
