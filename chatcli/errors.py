"""The one user-facing error family. Raised deep, turned into exit codes only in cli.py."""

from chatcli.engine.errors import EngineError, ModelLoadError, NumericalError, SamplingError
from chatcli.types import ParamError


class ChatcliError(Exception):
    """A failure the user can act on; the message names the thing and the fix."""

    exit_code = 1


class UsageError(ChatcliError):
    """Bad usage or a bad parameter (exit 2, Click's convention)."""

    exit_code = 2


class LoadError(ChatcliError):
    """A model, tokenizer, template or prompt cannot be loaded (exit 3)."""

    exit_code = 3


class FileParamError(LoadError):
    """A file (a prompt's front matter) cannot be loaded because a sampling value in it is out of range: exit 2, as
    the same value given as a flag, /set or CHATCLI_* gets."""

    exit_code = 2


class BackendError(ChatcliError):
    """A backend is unreachable or broke its protocol (exit 4)."""

    exit_code = 4


class StoreError(ChatcliError):
    """The model store, a download or a conversation database failed (exit 1 unless a subclass says otherwise)."""

    exit_code = 1


# These are caught at the CLI boundary; anything else is a bug and shows a traceback. ParamError (exit 2) comes from
# chatcli.types, which may not import this module: it is the one range check every edge shares.
USER_ERRORS = (ChatcliError, EngineError, ParamError)

__all__ = [
    "ChatcliError",
    "UsageError",
    "LoadError",
    "FileParamError",
    "BackendError",
    "StoreError",
    "EngineError",
    "ModelLoadError",
    "NumericalError",
    "SamplingError",
    "ParamError",
    "USER_ERRORS",
]
