"""File-system helpers of the store: a per-model lock, temporary folders inside the store, atomic swaps, disk errors."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chatcli.errors import StoreError

TMP_PREFIX = ".tmp-"


def disk_error(e: OSError, where: Path) -> StoreError:
    """An OSError while writing the store, as a one-line StoreError with the fix."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"no space left on the device while writing {where}; free some space or pick another store with --models-dir")
    return StoreError(f"cannot write {where}: {e.strerror or e}; check the folder's permissions or use --models-dir")


def store_root(models_dir=None) -> Path:
    """The store folder (created if missing); an unwritable one is a StoreError with the fix."""
    from chatcli import settings

    root = settings.models_dir(models_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(e, root) from None
    return root


@contextmanager
def store_lock(root: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on NAME in the store, so two pulls (two processes, parallel tests) never clash."""
    locks = root / ".locks"
    try:
        locks.mkdir(parents=True, exist_ok=True)
        fh = open(locks / f"{name}.lock", "a+")
    except OSError as e:
        raise disk_error(e, locks) from None
    try:
        try:
            import fcntl
        except ImportError:  # no POSIX locks (Windows): run unlocked
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()  # closing releases the lock


@contextmanager
def work_dir(root: Path, name: str) -> Iterator[Path]:
    """A fresh .tmp-NAME-xxxx folder in the store (same file system, so the final rename is atomic); always removed.

    Call it with the store lock held: leftovers of NAME from a killed earlier run are swept first.
    """
    for stale in root.glob(f"{TMP_PREFIX}{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        path = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-", dir=root))
    except OSError as e:
        raise disk_error(e, root) from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def install(folder: Path, target: Path, work: Path) -> None:
    """Move the finished FOLDER to TARGET atomically; an existing TARGET is set aside in WORK first and then dropped."""
    try:
        if target.exists() or target.is_symlink():
            os.replace(target, work / "previous")
        os.replace(folder, target)
    except OSError as e:
        raise disk_error(e, target) from None


def folder_size(path: Path) -> int:
    """Bytes used by the regular files under PATH (symlinks not followed)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total
