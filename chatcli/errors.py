"""The one user-facing error family. Raised deep, turned into exit codes only in cli.py."""

from chatcli.engine.errors import EngineError, ModelLoadError, NumericalError, SamplingError


class ChatcliError(Exception):
    """A failure the user can act on; the message names the thing and the fix."""

    exit_code = 1


class UsageError(ChatcliError):
    """Bad usage or a bad parameter (exit 2, Click's convention)."""

    exit_code = 2


class LoadError(ChatcliError):
    """A model, tokenizer, template or prompt cannot be loaded (exit 3)."""

    exit_code = 3


class BackendError(ChatcliError):
    """A backend is unreachable or broke its protocol (exit 4)."""

    exit_code = 4


class StoreError(ChatcliError):
    """The model store, a download or a conversation database failed (exit 1 unless a subclass says otherwise)."""

    exit_code = 1


# Both families are caught at the CLI boundary; anything else is a bug and shows a traceback.
USER_ERRORS = (ChatcliError, EngineError)

__all__ = [
    "ChatcliError",
    "UsageError",
    "LoadError",
    "BackendError",
    "StoreError",
    "EngineError",
    "ModelLoadError",
    "NumericalError",
    "SamplingError",
    "USER_ERRORS",
]
