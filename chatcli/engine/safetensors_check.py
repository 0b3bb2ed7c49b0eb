"""Validate a safetensors file's header against its size before anything is allocated or memory-mapped."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from chatcli.engine.errors import ModelLoadError

DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


def _json_header(path: Path) -> tuple[dict, int, int]:
    """The header as parsed JSON, its length and the file's size."""
    size = os.path.getsize(path)
    if size < 8:
        raise ModelLoadError(f"{path}: truncated safetensors file ({size} bytes); re-download or re-convert it")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER or 8 + n > size:
            raise ModelLoadError(f"{path}: header length {n} points past the end of the file ({size} bytes); the file is truncated or corrupt")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ModelLoadError(f"{path}: header is not UTF-8 (byte {e.start}); the file is corrupt") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: header is not valid JSON ({e.msg} at {e.pos}); the file is corrupt") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: header is not a JSON object")
    return header, n, size


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header's free-form `__metadata__` (string keys and values), or {} when it has none."""
    meta = _json_header(Path(path))[0].get("__metadata__")
    return {k: v for k, v in meta.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(meta, dict) else {}


def read_header(path: str | Path) -> tuple[dict[str, dict], int]:
    """The tensor entries {name: {dtype, shape, data_offsets}} and the byte offset where data starts."""
    path = Path(path)
    header, n, size = _json_header(path)
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    spans = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise ModelLoadError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape) \
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in (begin, end)):
            raise ModelLoadError(f"{path}: tensor {name!r} has a malformed shape or offsets")
        numel = 1
        for d in shape:
            numel *= d
        if end < begin or end - begin != numel * DTYPE_SIZES[dtype]:
            raise ModelLoadError(
                f"{path}: tensor {name!r} {dtype}{list(shape)} needs {numel * DTYPE_SIZES[dtype]} bytes but spans {end - begin}"
            )
        if end > data_len:
            raise ModelLoadError(f"{path}: tensor {name!r} ends at byte {end}, past the end of the data ({data_len} bytes); the file is truncated")
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin < pos:
            raise ModelLoadError(f"{path}: tensor {name!r} overlaps the previous tensor (offset {begin} < {pos})")
        if begin > pos:
            raise ModelLoadError(f"{path}: gap of {begin - pos} bytes before tensor {name!r}")
        pos = end
    if pos != data_len:
        raise ModelLoadError(f"{path}: {data_len - pos} trailing bytes after the last tensor")
    return header, 8 + n
