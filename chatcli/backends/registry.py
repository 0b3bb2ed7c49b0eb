"""Find backends through the `chatcli.backends` entry-point group; built-ins register the same way as plugins."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import entry_points

from chatcli.errors import BackendError, UsageError

GROUP = "chatcli.backends"


@dataclass(frozen=True)
class BackendInfo:
    """One registered backend and the distribution it came from."""

    name: str
    target: str  # "module:attr"
    dist: str
    version: str = ""


def available() -> dict[str, BackendInfo]:
    """All backends registered in the environment, by name."""
    found: dict[str, BackendInfo] = {}
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        name, version = (dist.name, dist.version) if dist is not None else ("?", "")
        found.setdefault(ep.name, BackendInfo(ep.name, ep.value, name, version))
    return found


def backend_class(name: str):
    """The backend class registered under NAME, or a UsageError suggesting the closest name."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as e:  # a broken plugin must not take the CLI down with a traceback
                raise BackendError(f"backend {name!r} ({ep.value}) failed to import: {e}") from e
    names = sorted(available())
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"unknown backend {name!r}{hint} (available: {', '.join(names) or 'none'}; see `chatcli backends`)")


# Settings keys each backend may take from the resolved settings; flags and profile keys are checked, these are offered.
_SETTING_KWARGS = ("dtype", "quant", "compile", "threads")
# Profile keys that steer construction instead of being passed to the class.
_PROFILE_META = ("type", "model")


def _accepted(cls) -> tuple[set[str], bool]:
    """Keyword names the constructor takes, and whether it takes **kwargs."""
    import inspect

    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def model_for(name: str | None, settings) -> str:
    """The model to load on backend NAME: one a flag, CHATCLI_MODEL or the config chose, else the `model` of its
    [backends.NAME] profile, else the packaged default."""
    name = name or settings.get("backend") or "local"
    profile_model = settings.backend_profile(name).get("model")
    if profile_model and settings.sources.get("model", "default") == "default":
        return str(profile_model)
    return str(settings.get("model"))


def make_backend(name: str | None, settings, **flags):
    """Construct backend NAME (default: settings' backend) from flags > [backends.NAME] profile > settings.

    NAME is an entry point, or a `[backends.NAME]` table in the config that names a server speaking the
    OpenAI API (`type = "openai"` by default), so `--backend vllm` works with just a base_url in the config.
    The settings are only read: `model_for` says which model to load.
    """
    name = name or settings.get("backend") or "local"
    profile = settings.backend_profile(name)
    if name in available():
        kind = name
    elif profile:
        kind = str(profile.get("type", "openai"))
    else:
        backend_class(name)  # raises UsageError with a suggestion
    cls = backend_class(kind)
    names, var_kw = _accepted(cls)
    kwargs: dict = {}
    for key in _SETTING_KWARGS:
        value = settings.get(key)
        if key in names and value is not None:
            kwargs[key] = value
    for key, value in profile.items():
        if key in _PROFILE_META:
            continue
        if key not in names and not var_kw:
            raise UsageError(f"config [backends.{name}]: unknown key {key!r} for backend {kind!r} "
                             f"(it takes: {', '.join(sorted(names)) or 'nothing'}); remove it")
        kwargs[key] = value
    for key, value in flags.items():
        if value is None:
            continue
        if key not in names:  # a flag is explicit intent: only a named parameter takes it, never **kwargs
            raise UsageError(f"--{key.replace('_', '-')} does not apply to backend {kind!r}; "
                             f"use --backend openai (or a [backends.NAME] profile) with it")
        kwargs[key] = value
    try:
        backend = cls(**kwargs)
    except TypeError as e:  # a plugin whose constructor disagrees with what it declares
        raise BackendError(f"backend {name!r} could not be constructed: {e}") from e
    if name != kind:
        try:
            backend.name = name  # the toolbar and stats show the profile's name
        except AttributeError:
            pass
    return backend
