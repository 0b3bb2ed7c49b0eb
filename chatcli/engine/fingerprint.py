"""What a file derived from a model depends on, for the keys of the files kept beside it (compiled decode steps,
stored quantized weights): a derived file is reused only while every part of its key is unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from chatcli.engine.weights import weight_files


def digest(parts: list) -> str:
    """A SHA-256 hex digest of PARTS (anything JSON can write, with str() for the rest)."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def machine() -> list[str]:
    """torch's version and the CPU as the CPU module sees it (model, flags, the level kernels were chosen for):
    kernels pack weights and inductor generates code for the vector ISA they find, so a file made on one machine,
    or under another ATEN_CPU_CAPABILITY, may not suit another."""
    from chatcli.engine import cpu

    return [torch.__version__] + cpu.fingerprint()


def weights(folder: Path) -> list:
    """config.json's bytes and each weight file's name, size and modification time (hashing hundreds of MB of
    weights at every start would cost more than what the derived file saves)."""
    parts: list = [(folder / "config.json").read_bytes().hex()]
    for f in weight_files(folder):
        st = f.stat()
        parts += [f.name, st.st_size, st.st_mtime_ns]
    return parts


def sources(*files: Path) -> list[str]:
    """The SHA-256 of each source file: the code that produced a derived file is part of what it depends on."""
    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
