"""A checked GGUF reader: every count, length and offset is validated against the file size before it is trusted.

gguf's own GGUFReader trusts the header (a huge count becomes a huge allocation or a raw numpy error) and is slow on
large vocabularies, so the structure is walked here with struct; the gguf package supplies the type tables and the
dequantization kernels.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatcli.errors import LoadError

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 used 32-bit counts and is long gone
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 20
MAX_STRING = 1 << 28
MAX_ARRAY = 1 << 28
MAX_DIMS = 4
MAX_ALIGNMENT = 1 << 16
DEFAULT_ALIGNMENT = 32
HEADER_SIZE = 24  # magic, version, tensor count, metadata count
_REQUIRED = object()

# GGUF value types -> struct format (scalars)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return _is_int(v) or isinstance(v, float)


class GGUFError(LoadError):
    """A GGUF file that is malformed, truncated or uses something we cannot convert (exit 3)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; `shape` is in numpy (row-major) order, the reverse of GGUF's ne."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        """The GGML type's name (Q4_K, F32, ...)."""
        from gguf import GGMLQuantizationType

        try:
            return GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"type {self.ggml_type}"


class _Cursor:
    """Reads little-endian values from a buffer, refusing to step past its end."""

    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.size, self.path = buf, 0, len(buf), path

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.path}: {what}; the file is not a valid GGUF (re-download or re-export it)")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} at byte {self.pos} needs {n} bytes but the file ends at {self.size} (truncated)")

    def scalar(self, fmt: str, what: str):
        n = struct.calcsize("<" + fmt)
        self.need(n, what)
        (v,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return v

    def string(self, what: str) -> str:
        n = self.scalar("Q", what + " length")
        if n > MAX_STRING:
            raise self.fail(f"{what} claims {n} bytes (limit {MAX_STRING})")
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not UTF-8 ({e})") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            v = self.scalar(_SCALARS[vtype], what)
            return bool(v) if vtype == 7 else v
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            if depth > 1:
                raise self.fail(f"{what}: arrays nested deeper than two levels")
            itype = self.scalar("I", what + " item type")
            count = self.scalar("Q", what + " count")
            if count > MAX_ARRAY:
                raise self.fail(f"{what}: array of {count} items (limit {MAX_ARRAY})")
            if itype in _NUMPY:
                width = np.dtype(_NUMPY[itype]).itemsize
                self.need(count * width, what)
                arr = np.frombuffer(self.buf, dtype=_NUMPY[itype], count=count, offset=self.pos)
                self.pos += count * width
                return arr.astype(bool).tolist() if itype == 7 else arr.tolist()
            if itype in (STRING, ARRAY):
                self.need(count * 8, what)  # every item carries at least an 8-byte length
                return [self.value(itype, f"{what}[{i}]", depth + 1) for i in range(count)]
            raise self.fail(f"{what}: unknown array item type {itype}")
        raise self.fail(f"{what}: unknown value type {vtype}")


def _describe(value: Any) -> str:
    """A short description of a metadata value for an error line (a vocabulary is not printed whole)."""
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}{'...' if len(value) > 40 else ''}"
    if isinstance(value, list):
        kinds = sorted({type(v).__name__ for v in value}) or ["no"]
        return f"an array of {len(value)} items ({'/'.join(kinds)})"
    return type(value).__name__


class GGUFFile:
    """A validated GGUF: .metadata (key -> value), .tensors (name -> TensorInfo), raw tensor bytes on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
            size = self.path.stat().st_size
            self._map = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as e:
            raise GGUFError(f"{self.path}: cannot be read ({e.strerror or e})") from None
        self.size = size
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self) -> None:
        c = _Cursor(self._map, self.path)
        head = bytes(self._map[:4])
        if head != MAGIC[: len(head)] or (len(head) == 4 and head != MAGIC):
            raise c.fail(f"bad magic number {head!r} (expected {MAGIC!r})")
        if self.size < HEADER_SIZE:
            raise c.fail(f"truncated: {self.size} bytes, but a GGUF header needs at least {HEADER_SIZE}")
        c.pos = 4
        version = c.scalar("I", "version")
        if version not in VERSIONS:
            if struct.unpack(">I", struct.pack("<I", version))[0] in VERSIONS:
                raise c.fail("big-endian GGUF is not supported")
            raise c.fail(f"unsupported GGUF version {version} (supported: {', '.join(map(str, VERSIONS))})")
        self.version = version
        n_tensors = c.scalar("Q", "tensor count")
        n_kv = c.scalar("Q", "metadata count")
        # Each entry needs at least 13 (kv) or 32 (tensor) bytes; bounding by both a cap and the file size keeps a
        # forged count from driving a long loop or a big allocation.
        if n_kv > MAX_KV or n_kv * 13 > self.size - c.pos:
            raise c.fail(f"metadata count {n_kv} is impossible for a {self.size}-byte file (limit {MAX_KV})")
        if n_tensors > MAX_TENSORS or n_tensors * 32 > self.size - c.pos:
            raise c.fail(f"tensor count {n_tensors} is impossible for a {self.size}-byte file (limit {MAX_TENSORS})")
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, int] = {}
        for i in range(n_kv):
            key = c.string(f"metadata key #{i}")
            if key in self.metadata:
                raise c.fail(f"duplicate metadata key {key!r}")
            vtype = c.scalar("I", f"type of {key!r}")
            self.value_types[key] = vtype
            self.metadata[key] = c.value(vtype, f"value of {key!r}")
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (
            not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0
            or alignment & (alignment - 1) or alignment > MAX_ALIGNMENT
        ):
            raise c.fail(f"general.alignment {alignment!r} is not a power of two up to {MAX_ALIGNMENT}")
        infos = [self._tensor_info(c, i) for i in range(n_tensors)]
        data_start = -(-c.pos // alignment) * alignment
        self.data_start = data_start
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, gtype, rel, nbytes in infos:
            if name in self.tensors:
                raise c.fail(f"duplicate tensor name {name!r}")
            if rel % alignment:
                raise c.fail(f"tensor {name!r} offset {rel} is not a multiple of the alignment {alignment}")
            if data_start + rel + nbytes > self.size:
                raise c.fail(
                    f"tensor {name!r} data ({nbytes} bytes at {data_start + rel}) runs past the end of the file "
                    f"({self.size} bytes): truncated data section"
                )
            self.tensors[name] = TensorInfo(name, shape, gtype, data_start + rel, nbytes)
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in self.tensors.values())
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise c.fail(f"tensors {a!r} and {b!r} overlap")

    def _tensor_info(self, c: _Cursor, i: int):
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        name = c.string(f"tensor #{i} name")
        n_dims = c.scalar("I", f"tensor {name!r} dimension count")
        if not 1 <= n_dims <= MAX_DIMS:
            raise c.fail(f"tensor {name!r} has {n_dims} dimensions (1..{MAX_DIMS} allowed)")
        ne = [c.scalar("Q", f"tensor {name!r} dimension") for _ in range(n_dims)]
        gtype = c.scalar("I", f"tensor {name!r} type")
        rel = c.scalar("Q", f"tensor {name!r} offset")
        if any(d == 0 or d > self.size * 8 for d in ne):
            raise c.fail(f"tensor {name!r} has an impossible shape {ne}")
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(gtype)]
        except (ValueError, KeyError):
            raise c.fail(f"tensor {name!r} has unknown GGML type {gtype}") from None
        if ne[0] % block:
            raise c.fail(f"tensor {name!r}: row length {ne[0]} is not a multiple of the block size {block}")
        count = 1
        for d in ne[1:]:
            count *= d
        nbytes = count * (ne[0] // block) * type_size
        if nbytes > self.size:
            raise c.fail(f"tensor {name!r} needs {nbytes} bytes, more than the whole file ({self.size})")
        return name, tuple(reversed(ne)), gtype, rel, nbytes

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes as stored, shaped (rows..., bytes per row) as gguf's dequantize expects."""
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(info.ggml_type)]
        row_bytes = info.shape[-1] // block * type_size
        flat = np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        return flat.reshape(*info.shape[:-1], row_bytes)

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value, or DEFAULT, unchecked: converters use the typed meta_* accessors below."""
        return self.metadata.get(key, default)

    # Typed accessors: a value of the wrong type or size is a GGUFError naming the file, the key and what was
    # expected, never a TypeError deep in the converter. A missing key gives DEFAULT, or an error when there is none.

    def _bad(self, key: str, value: Any, expected: str) -> GGUFError:
        got = "missing" if value is _REQUIRED else _describe(value)
        return GGUFError(f"{self.path}: metadata {key} is {got}, expected {expected}; re-export the GGUF or use the HF folder")

    def _typed(self, key: str, default: Any, ok: Callable[[Any], bool], expected: str,
               convert: Callable[[Any], Any] = lambda v: v) -> Any:
        """CONVERT(value of KEY) when OK accepts it; DEFAULT when the key is missing and there is one; else a GGUFError."""
        if key not in self.metadata and default is not _REQUIRED:
            return default
        value = self.metadata.get(key, _REQUIRED)
        if value is _REQUIRED or not ok(value):
            raise self._bad(key, value, expected)
        return convert(value)

    def meta_str(self, key: str, default: Any = _REQUIRED) -> Any:
        """A string value."""
        return self._typed(key, default, lambda v: isinstance(v, str), "a string")

    def meta_int(self, key: str, lo: int, hi: int, default: Any = _REQUIRED) -> Any:
        """An integer in [LO, HI]."""
        return self._typed(key, default, lambda v: _is_int(v) and lo <= v <= hi, f"an integer in [{lo}, {hi}]")

    def meta_float(self, key: str, lo: float, hi: float, default: Any = _REQUIRED) -> Any:
        """A finite number in [LO, HI] (integers are accepted, as some writers store whole numbers as ints)."""
        return self._typed(key, default, lambda v: _is_number(v) and lo <= v <= hi,  # NaN fails the comparison
                           f"a number in [{lo:g}, {hi:g}]", float)

    def meta_bool(self, key: str, default: Any = _REQUIRED) -> Any:
        """A boolean (0 and 1 are accepted: older writers used integers)."""
        return self._typed(key, default, lambda v: isinstance(v, bool) or (_is_int(v) and v in (0, 1)), "a boolean", bool)

    def meta_str_list(self, key: str, default: Any = _REQUIRED) -> Any:
        """An array of strings."""
        return self._typed(key, default, lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                           "an array of strings")

    def meta_int_list(self, key: str, lo: int, hi: int, default: Any = _REQUIRED) -> Any:
        """An array of integers in [LO, HI] (booleans count as 0 and 1)."""
        return self._typed(key, default, lambda v: isinstance(v, list) and all(isinstance(x, int) and lo <= x <= hi for x in v),
                           f"an array of integers in [{lo}, {hi}]", lambda v: [int(x) for x in v])

    def meta_float_list(self, key: str, default: Any = _REQUIRED) -> Any:
        """An array of finite numbers."""
        return self._typed(key, default, lambda v: isinstance(v, list) and all(_is_number(x) and math.isfinite(x) for x in v),
                           "an array of finite numbers", lambda v: [float(x) for x in v])

    def close(self) -> None:
        """Release the mapping and the file."""
        m = getattr(self, "_map", None)
        if isinstance(m, mmap.mmap):
            try:
                m.close()
            except BufferError:  # a numpy view still points into it; the OS frees it with the last view
                pass
        if getattr(self, "_fh", None):
            self._fh.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
