"""What `ask` reads besides its arguments, piped stdin and -f attachments, each read with a cap: a question can be
no longer than a context holds, and `ask -f /dev/zero` must fail at once rather than fill the memory."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

from chatcli.errors import UsageError

DEFAULT_MAX_INPUT = 8 << 20  # before the model is loaded: more than any context we serve holds (2M tokens at 4 B)
BYTES_PER_TOKEN = 16  # generous: text averages about 4 bytes a token, so this only refuses what cannot fit
MIN_CONTEXT_INPUT = 64 << 10  # a tiny test model's context still takes a page of text
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """A size such as 65536, 512k, 8M or 1G (binary units); UsageError names a bad one."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"--max-input must be a size such as 65536, 512k or 8M, got {text!r}")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < 1:
        raise UsageError(f"--max-input must be at least 1 byte, got {text!r}")
    return size


def human(n: int) -> str:
    """N bytes in the largest binary unit that keeps it readable."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def context_cap(context_tokens: int) -> int:
    """The input limit a model with CONTEXT_TOKENS of context implies."""
    return max(MIN_CONTEXT_INPUT, context_tokens * BYTES_PER_TOKEN)


def _too_big(what: str, size: str | None, cap: int) -> UsageError:
    """SIZE None: a stream, known only to be longer than CAP."""
    said = f"is {size}; the input limit is {human(cap)}" if size else f"is longer than the {human(cap)} input limit"
    return UsageError(f"{what} {said}: shorten it, or raise the limit with --max-input SIZE")


def _read_capped(stream, what: str, cap: int) -> bytes:
    """At most CAP bytes of STREAM, read in pieces; UsageError once there are more."""
    parts, total = [], 0
    while True:
        piece = stream.read(min(1 << 20, cap + 1 - total))
        if not piece:
            return b"".join(parts)
        parts.append(piece)
        total += len(piece)
        if total > cap:
            raise _too_big(what, None, cap)


def read_stdin(cap: int = DEFAULT_MAX_INPUT) -> str:
    """Piped stdin as text (invalid UTF-8 replaced), at most CAP bytes; nothing when stdin is a terminal."""
    stdin = sys.stdin
    if stdin is None or stdin.closed or stdin.isatty():
        return ""
    if not hasattr(stdin, "buffer"):  # a test's StringIO
        data = stdin.read(cap + 1).encode("utf-8", "surrogateescape")
        if len(data) > cap:
            raise _too_big("stdin", None, cap)
    else:
        data = _read_capped(stdin.buffer, "stdin", cap)
    return data.decode("utf-8", errors="replace")


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return word
    return "not a regular file"


def read_file(name: str, cap: int = DEFAULT_MAX_INPUT) -> str:
    """An attached file, fenced and named, so the model can tell it from the question; regular files and pipes
    only (a device such as /dev/zero never ends), at most CAP bytes."""
    path = Path(name).expanduser()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"-f {name}: no such file; check the path") from None
    except OSError as e:
        raise UsageError(f"-f {name}: cannot read it ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"-f {name}: is a folder; attach files one by one")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        raise UsageError(f"-f {name}: is {_kind(st.st_mode)}; attach a regular file or a pipe")
    if stat.S_ISREG(st.st_mode) and st.st_size > cap:
        raise _too_big(f"-f {name}", human(st.st_size), cap)
    try:
        with open(path, "rb") as f:
            data = _read_capped(f, f"-f {name}", cap)
    except OSError as e:
        raise UsageError(f"-f {name}: cannot read it ({e.strerror})") from None
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    fence = "````" if "```" in text else "```"
    return f"{path.name}:\n{fence}\n{text}\n{fence}"


def build_question(question: str, files: list[str], stdin_text: str | None = None,
                   cap: int = DEFAULT_MAX_INPUT) -> str:
    """The question, then piped stdin, then attached files, together at most CAP bytes; UsageError (exit 2) if all
    are empty or they are too long."""
    stdin_text = read_stdin(cap) if stdin_text is None else stdin_text
    parts = [p for p in (question.strip(), stdin_text.strip("\n")) if p.strip()]
    parts += [read_file(f, cap) for f in files]
    if not parts:
        raise UsageError('empty question; give one as an argument (chatcli ask "...") or pipe text on stdin')
    text = "\n\n".join(parts)
    check_size(text, cap)
    return text


def check_size(text: str, cap: int, why: str = "") -> None:
    """UsageError when TEXT is over CAP bytes in UTF-8 (WHY says where the cap comes from)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > cap:
        raise UsageError(f"the question with its stdin and files is {human(size)}; the input limit is {human(cap)}"
                         f"{why}: shorten it, or raise the limit with --max-input SIZE")
