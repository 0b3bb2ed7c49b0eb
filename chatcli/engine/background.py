"""Build the compiled decode step in a separate process at idle CPU priority, so that a chat under `--compile auto`
starts at once, eagerly, and switches to the compiled step when it is ready.

The build takes about a minute of both cores for SmolLM2. At SCHED_IDLE (nice 19 where that is missing) it runs only
when the chat leaves a core idle, which is most of the time: while the user reads and types. It outlives the chat
that started it (its own session, so Ctrl-C in the chat does not reach it), so a short first chat still leaves a
package for the next one. Beside the package, in the cache folder:
- NAME.lock: a build is running (its process id inside); one that names a dead process is taken over.
- NAME.log: the build's output.
- NAME.failed: the build failed (the reason inside); later chats do not try again, `--compile on` does, in the
  foreground, where the user sees why.

A build holds its own copy of the model beside the chat's, and inductor's working set, so it does not start when
the machine has less memory available than it would take (ShortOfMemory): the kernel would otherwise kill the
largest process, which may be the chat.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from torch import nn

from chatcli.engine import compile as compiling
from chatcli.engine.cpu import available_memory

# The peak memory of a build (its process's maximum RSS), measured: SmolLM2-135M bf16, a 257 MB file, 0.6-1.1 GB;
# Qwen2.5-0.5B bf16, a 1.2 GB file, 2.5 GB. That is about 0.75 GB plus 1.5 times the weights' bytes.
BUILD_BASE_BYTES = 800 * 10**6
BUILD_BYTES_PER_WEIGHT_BYTE = 1.5


class ShortOfMemory(compiling.CompileError):
    """Less memory is available than a background build would take."""


def start(model: nn.Module, folder: Path, cache_dir: Path, dtype: str, quant: str) -> Path | None:
    """Start building MODEL's compiled step (MODEL was loaded from FOLDER with DTYPE and QUANT) unless it is stored,
    failed before, or cannot be compiled. The package's path when a build is running (started now or before),
    else None. ShortOfMemory when the machine lacks the memory for one."""
    if not compiling.aot_supported(model):
        return None
    package = compiling.package_path(model, folder, cache_dir)
    if compiling.is_stored(package) or package.with_suffix(".failed").exists():
        return None
    if running(package):
        return package
    available, needed = available_memory(), memory_needed(folder, dtype)
    if available is not None and available < needed:
        raise ShortOfMemory(f"{available / 1e9:.1f} GB of memory is available and a build takes about {needed / 1e9:.1f} GB")
    lock = package.with_suffix(".lock")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock.unlink(missing_ok=True)  # a dead builder's
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError:  # a read-only cache, or another chat took the lock first: either way, nothing to start
        return package if running(package) else None
    try:
        with open(package.with_suffix(".log"), "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "chatcli.engine.background", str(folder), dtype, quant, str(package)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        os.write(fd, str(proc.pid).encode())
    except OSError:
        os.close(fd)
        lock.unlink(missing_ok=True)
        return None
    os.close(fd)
    return package


def memory_needed(folder: Path, dtype: str) -> int:
    """Bytes a build of the model in FOLDER at DTYPE may take at its peak (on the safe side: a float32 model is
    counted as if widened from a 16-bit file, and a quantized one as if it were not)."""
    from chatcli.engine.weights import weight_files

    weights = sum(f.stat().st_size for f in weight_files(folder)) * (2 if dtype == "float32" else 1)
    return int(BUILD_BASE_BYTES + BUILD_BYTES_PER_WEIGHT_BYTE * weights)


def running(package: Path) -> bool:
    """True while a build of PACKAGE holds its lock (a live process id, or one not written yet)."""
    try:
        text = package.with_suffix(".lock").read_text().strip()
    except OSError:
        return False
    if not text:
        return True  # the starter has not written the id yet
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except (ValueError, OSError):
        return True  # alive but not ours to signal, or unreadable: leave it
    return True


def failure(package: Path) -> str | None:
    """Why the background build of PACKAGE failed (the first line of NAME.failed), or None."""
    try:
        lines = package.with_suffix(".failed").read_text().strip().splitlines()
    except OSError:
        return None
    return lines[0] if lines else "no reason given"


def main(argv: list[str]) -> int:
    """`python -m chatcli.engine.background FOLDER DTYPE QUANT PACKAGE`: load, build, and drop older packages."""
    folder, dtype, quant, package = Path(argv[0]), argv[1], argv[2], Path(argv[3])
    _idle_priority()
    from chatcli.engine.loader import load_model

    try:
        model = load_model(folder, dtype, quant=quant)
        key = compiling.package_key(model, folder)
        if key != package.stem:  # the weights or chatcli changed since the chat asked: that chat cannot use it
            raise compiling.CompileError(f"the model now builds {key}, not {package.stem}")
        compiling.build(model, package)
        compiling.drop_stale(package)
        return 0
    except Exception as e:
        print(f"chatcli: background build failed: {e}", file=sys.stderr)
        package.with_suffix(".failed").write_text(f"{e}\n")
        return 1
    finally:
        package.with_suffix(".lock").unlink(missing_ok=True)


def _idle_priority() -> None:
    """Run only on otherwise idle CPU time: SCHED_IDLE on Linux, else the lowest nice value."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except (AttributeError, OSError):
            pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
