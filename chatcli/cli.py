"""The Typer app. Commands live in chatcli/commands/ and stay thin; this is the only place errors become exit codes."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from chatcli import __version__

app = typer.Typer(
    name="chatcli",
    help="Chat with open-weight language models on your CPU, or hand the conversation to a bigger server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,
)

# Each module exposes register(app); they must not import torch at import time, so `--help` stays fast.
COMMAND_MODULES = [
    "chatcli.commands.chat",
    "chatcli.commands.models",
    "chatcli.commands.prompts",
    "chatcli.commands.history",
    "chatcli.commands.backends",
    "chatcli.commands.bench",
    "chatcli.commands.inspect",
    "chatcli.commands.config",
]

_debug = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chatcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    models_dir: Annotated[Optional[str], typer.Option("--models-dir", help="Model store folder (default: $CHATCLI_HOME/models).")] = None,
) -> None:
    global _debug
    _debug = _debug or debug
    if models_dir:
        os.environ["CHATCLI_MODELS_DIR"] = models_dir


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # a command group not built yet
                continue
            raise
        module.register(app)


def _error_line(message: str) -> None:
    text = " ".join(str(message).split("\n")) if "\n" not in str(message).strip() else str(message).strip()
    sys.stderr.write(f"chatcli: error: {text}\n")
    sys.stderr.flush()


def _usage_line(e: Exception) -> str:
    """Click's usage error as one line (its usage block is three): the message (with Click's closest option name
    for an unknown one) and where the help is."""
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    ctx = getattr(e, "ctx", None)
    message = " ".join(message.split()).rstrip(".")
    if ctx is not None:
        message += f"; see '{ctx.command_path} --help'"
    return message


def _quiet_broken_pipe() -> None:
    # The reader went away (`| head -1`): point stdout at /dev/null so the interpreter's final flush is silent.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class StdoutError(OSError):
    """A write to stdout failed (a full disk, a closed descriptor): the output is lost, and the user must know."""


class _GuardedStdout:
    """sys.stdout, with its write failures raised as StdoutError, so main() can tell them from the other OSErrors;
    a closed descriptor 1 (`>&-`, where Python leaves sys.stdout None) fails the first write the same way."""

    def __init__(self, stream):
        self._stream = stream

    def _call(self, name: str, *args):
        if self._stream is None:
            import errno

            raise StdoutError(errno.EBADF, "stdout is closed")
        try:
            return getattr(self._stream, name)(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise StdoutError(e.errno, e.strerror) from None

    def write(self, text):
        return self._call("write", text)

    def writelines(self, lines):
        return self._call("writelines", lines)

    def flush(self):
        return None if self._stream is None else self._call("flush")

    def isatty(self) -> bool:
        return False if self._stream is None else self._stream.isatty()

    def fileno(self) -> int:
        return self._call("fileno")

    def __getattr__(self, name):
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def _click_exceptions() -> tuple[tuple, tuple, tuple]:
    """(exit, usage error, abort) classes of every click that typer may run on: typer 0.29+ raises its vendored copy's
    (typer._click), older typer raises click's own, and an unknown option must be one line either way."""
    import typer

    exits, usage, aborts = [typer.Exit], [], [typer.Abort]
    if hasattr(typer, "TyperException"):
        usage.append(typer.TyperException)  # the vendored ClickException's base
    try:
        import click
    except ImportError:
        pass
    else:
        exits.append(click.exceptions.Exit)
        usage.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    return tuple(exits), tuple(usage), tuple(aborts)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    from chatcli.errors import USER_ERRORS

    exits, usage_errors, aborts = _click_exceptions()

    global _debug
    args = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line, not only before the subcommand.
    _debug = "--debug" in args or os.environ.get("CHATCLI_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    _register()
    code = 0
    plain_stdout = sys.stdout
    if not isinstance(sys.stdout, _GuardedStdout):
        sys.stdout = _GuardedStdout(sys.stdout)
    try:
        rv = app(args=args, prog_name="chatcli", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except exits as e:
        code = e.exit_code
    except usage_errors as e:
        _error_line(_usage_line(e))
        code = getattr(e, "exit_code", 2)
    except (*aborts, KeyboardInterrupt):
        if _debug:
            raise
        sys.stderr.write("\ninterrupted\n")
        code = 130
    except BrokenPipeError:
        _quiet_broken_pipe()
        code = 0
    except StdoutError as e:
        if _debug:
            raise
        _error_line(f"cannot write to stdout ({e.strerror}); the output is incomplete")
        _quiet_broken_pipe()  # what is still buffered would fail again at exit
        code = 1
    except USER_ERRORS as e:
        if _debug:
            import traceback

            traceback.print_exc()
        _error_line(str(e))
        code = getattr(e, "exit_code", 1)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    except StdoutError as e:  # the last of the buffered output failed to go out
        _error_line(f"cannot write to stdout ({e.strerror}); the output is incomplete")
        _quiet_broken_pipe()
        code = code or 1
    if sys.stdout is not plain_stdout and isinstance(sys.stdout, _GuardedStdout):
        sys.stdout = plain_stdout  # main() called in-process (tests) leaves the caller's stdout as it was
    if "torch" in sys.modules and not _debug:
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown, which takes 0.7 s once torch is loaded (a third of a
    one-shot `ask`) and has nothing left to do: every history write is committed by then, and atexit handlers
    (temporary folders and the like) still run here."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # AttributeError: a closed stdout is None
            pass
    os._exit(code)


def is_debug() -> bool:
    """Whether --debug or CHATCLI_DEBUG asked for tracebacks."""
    return _debug


if __name__ == "__main__":
    main()
