"""Where things live and which defaults are in effect: packaged defaults < config file < CHATCLI_* env < flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatcli import types
from chatcli.errors import UsageError

APP = "chatcli"
PACKAGE_DATA = Path(__file__).parent / "data"
DEFAULT_MODEL = "smollm2-135m-instruct"

# Keys the config file and CHATCLI_* variables may set besides the sampling parameters (chatcli.types declares those),
# with their types and packaged defaults.
DEFAULTS: dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "prompt": "default",
    "backend": "local",
    "dtype": "auto",
    "quant": "none",
    "compile": "auto",
    "threads": 0,
    **types.DEFAULTS,
    "context_policy": "drop-oldest",
    "save": True,
    "vi": False,
    "think": "auto",  # a thinking model: auto (its template's default), on, off
    "think_budget": 0,  # end its reasoning after this many tokens (0: no limit)
}
TYPES: dict[str, type] = {
    "model": str, "prompt": str, "backend": str, "dtype": str, "quant": str, "compile": str,
    "threads": int, "context_policy": str, "save": bool, "vi": bool, "think": str, "think_budget": int,
    **{name: spec.kind for name, spec in types.PARAMS.items()},
}
# The keys that take one of a few words, the same in flags (Typer choices), the config file and CHATCLI_*. The engine
# keeps its own copies (engine.quant.MODES, engine.compile.MODES: it imports nothing of chatcli); a test keeps them equal.
CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": ("auto", "float32", "bfloat16"),
    "quant": ("none", "int8", "int4"),
    "compile": ("auto", "on", "off"),
    "context_policy": ("drop-oldest", "error"),
    "think": ("auto", "on", "off"),
}


def home() -> Path:
    """CHATCLI_HOME (the checkout when run through make), else the user data dir."""
    env = os.environ.get("CHATCLI_HOME")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP))


def models_dir(override: str | os.PathLike | None = None) -> Path:
    """The model store: --models-dir, else $CHATCLI_HOME/models."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("CHATCLI_MODELS_DIR")
    return Path(env).expanduser().resolve() if env else home() / "models"


def prompts_dir() -> Path:
    """User prompt files; packaged prompts fill in what is missing here."""
    return home() / "prompts"


def data_dir() -> Path:
    """Conversation database and input history: CHATCLI_DATA_DIR, else $CHATCLI_HOME/data with CHATCLI_HOME, else the user data dir."""
    return _state_dir("CHATCLI_DATA_DIR", "data", "user_data_dir")


def cache_dir() -> Path:
    """What chatcli can rebuild (compiled decode steps): CHATCLI_CACHE_DIR, else $CHATCLI_HOME/cache with
    CHATCLI_HOME, else the user cache dir."""
    return _state_dir("CHATCLI_CACHE_DIR", "cache", "user_cache_dir")


def _state_dir(env_var: str, under_home: str, platform_dir: str) -> Path:
    """$ENV_VAR, else $CHATCLI_HOME/UNDER_HOME when CHATCLI_HOME is set, else platformdirs.PLATFORM_DIR(chatcli)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser().resolve()
    if os.environ.get("CHATCLI_HOME"):
        return home() / under_home
    import platformdirs

    return Path(getattr(platformdirs, platform_dir)(APP))


def config_path() -> Path:
    """CHATCLI_CONFIG, else config.toml in the user config dir."""
    env = os.environ.get("CHATCLI_CONFIG")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def _coerce(key: str, value: Any, where: str) -> Any:
    """VALUE for KEY from WHERE (a file, a variable or a flag); UsageError names WHERE, the key and what it takes."""
    if key in types.PARAMS:  # the schema's own check, as at every edge; text (CHATCLI_*, a quoted TOML value) is parsed
        try:
            return types.parse(key, value) if isinstance(value, str) else types.check(key, value)
        except types.ParamError as e:
            raise UsageError(f"{where}: {e}") from None
    typ = TYPES[key]
    if value is None:
        return None
    try:
        if typ is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ in (int, float) and isinstance(value, bool):
            raise ValueError(value)
        value = typ(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {key} must be {typ.__name__}, got {value!r}") from None
    if key in CHOICES and value not in CHOICES[key]:
        raise UsageError(f"{where}: {key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    return value


@dataclass
class Settings:
    """Values in effect and where each came from (default, config file, env or flag)."""

    values: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))
    sources: dict[str, str] = field(default_factory=lambda: {k: "default" for k in DEFAULTS})
    raw: dict[str, Any] = field(default_factory=dict)  # the whole config file, for sections like [backends.NAME]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def apply_flags(self, **flags: Any) -> Settings:
        """Flags given on the command line (not None) override everything."""
        for key, value in flags.items():
            if value is not None and key in TYPES:
                self.values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
                self.sources[key] = "flag"
        return self

    def backend_profile(self, name: str) -> dict[str, Any]:
        """The [backends.NAME] table of the config file, or {}."""
        section = self.raw.get("backends", {})
        profile = section.get(name, {}) if isinstance(section, dict) else {}
        return dict(profile) if isinstance(profile, dict) else {}


def load_settings() -> Settings:
    """Packaged defaults, then the config file, then CHATCLI_* variables."""
    s = Settings()
    path = config_path()
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8", errors="replace"))
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{path}: not valid TOML ({e}); fix or remove the file") from None
        s.raw = raw
        for key, value in raw.items():
            if key in TYPES:
                s.values[key] = _coerce(key, value, str(path))
                s.sources[key] = f"config ({path})"
    for key in TYPES:
        env = os.environ.get(f"CHATCLI_{key.upper()}")
        if env is not None:
            s.values[key] = _coerce(key, env, f"CHATCLI_{key.upper()}")
            s.sources[key] = f"env (CHATCLI_{key.upper()})"
    return s
