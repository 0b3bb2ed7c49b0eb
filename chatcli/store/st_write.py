"""A streaming safetensors writer: the header is known from the shapes up front, then tensors are written one by one,
so converting a model never holds more than one dequantized tensor (or one chunk of rows) in memory."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

DTYPES = {"float32": ("F32", 4), "float16": ("F16", 2), "bfloat16": ("BF16", 2)}


def to_bytes(a: np.ndarray, dtype: str) -> bytes:
    """float32 values as little-endian DTYPE bytes; bfloat16 rounds to nearest even, as torch does."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "float32":
        return a.astype("<f4", copy=False).tobytes()
    if dtype == "float16":
        return a.astype("<f2").tobytes()
    u = a.view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded.tobytes()


def _write(f: BinaryIO, data: bytes) -> None:
    # One place for every byte that reaches the disk (the full-disk test patches it).
    f.write(data)


def write_safetensors(
    path: Path,
    tensors: Iterable[tuple[str, tuple[int, ...]]],
    produce: Callable[[str], Iterator[np.ndarray]],
    dtype: str | dict[str, str],
    metadata: dict[str, str] | None = None,
    on_tensor: Callable[[str], None] | None = None,
) -> None:
    """Write PATH with TENSORS (name, shape) in order; produce(name) yields the values of one tensor in row chunks.

    dtype: one dtype for every tensor, or {name: dtype} (a GGUF mixes float32 norms with float16 tensors)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    order = [(name, shape, dtype[name] if isinstance(dtype, dict) else dtype) for name, shape in tensors]
    offset = 0
    for name, shape, dt in order:
        tag, width = DTYPES[dt]
        n = int(np.prod(shape, dtype=np.int64)) * width
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        _write(f, struct.pack("<Q", len(blob)) + blob)
        for name, _shape, dt in order:
            expected = header[name]["data_offsets"]  # type: ignore[index]
            written = 0
            for chunk in produce(name):
                data = to_bytes(chunk, dt)
                written += len(data)
                _write(f, data)
            if written != expected[1] - expected[0]:
                raise AssertionError(f"{name}: wrote {written} bytes, header says {expected[1] - expected[0]}")
            if on_tensor:
                on_tensor(name)
        f.flush()
