"""Quantized weights stored beside a model (`chatcli models quantize NAME int4`), so `--quant` need not quantize at
every start.

Quantizing SmolLM2-135M to int4 at load takes about 0.9 s of a 1.4 s load: the int4 layers' grouping, rounding and
packing, and the int8 codes of the unembedding. The stored file holds what the quantized layers compute with (the
int4 kernel's packed weights and scales as they are in memory), memory-mapped at load like the model's own weights.
Only fbgemm's packed unembedding is rebuilt from its stored codes, because that layout is opaque.

The file is models/NAME/quantized/MODE-DTYPE.safetensors. Its header records a key over everything its bytes depend
on: the model's weight files and config.json, the quantization code (linear.py, quant.py), torch and the CPU (the int4
kernel packs for the vector unit it finds). A file whose key no longer matches is ignored, and the model is
quantized at load as if it were not there: a stale file costs time, never correctness.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from chatcli.engine import fingerprint
from chatcli.engine.safetensors_check import read_metadata
from chatcli.engine.weights import read_tensors

FOLDER = "quantized"
FORMAT = 1  # the file's layout: tensors named PATH.BUFFER, the layers' class names in the header


def stored_path(folder: Path, mode: str, dtype: torch.dtype) -> Path:
    """Where MODE's stored quantization for DTYPE activations lives in the model FOLDER."""
    return Path(folder) / FOLDER / f"{mode}-{str(dtype).removeprefix('torch.')}.safetensors"


def key(folder: Path, mode: str, dtype: torch.dtype) -> str:
    """What a stored file must have been made from to be used for MODE and DTYPE in FOLDER now."""
    here = Path(__file__).parent
    code = fingerprint.sources(here / "linear.py", here / "quant.py")
    return fingerprint.digest([FORMAT, mode, str(dtype)] + fingerprint.machine() + fingerprint.weights(Path(folder)) + code)


@dataclass
class Stored:
    """A stored quantization, open: per layer path, the class name it was made for and its tensors (views of a
    private memory map, which they keep alive)."""

    path: Path
    layers: dict[str, tuple[str, dict[str, torch.Tensor]]]

    def layer(self, path: str) -> tuple[str, dict[str, torch.Tensor]] | None:
        """(class name, tensors) stored for the layer at PATH, or None."""
        return self.layers.get(path)


def status(folder: Path, mode: str, dtype: torch.dtype) -> str | None:
    """"current", "stale" (made from other weights, code, torch or CPU), "unreadable", or None when absent."""
    return _header(folder, mode, dtype)[0]


def _header(folder: Path, mode: str, dtype: torch.dtype) -> tuple[str | None, dict[str, str]]:
    """status() and the file's header metadata (empty unless readable)."""
    path = stored_path(folder, mode, dtype)
    if not path.is_file():
        return None, {}
    try:
        meta = read_metadata(path)
    except Exception:  # any damage reads as unreadable; open_stored says nothing either, and loading quantizes
        return "unreadable", {}
    return ("current" if meta.get("key") == key(folder, mode, dtype) else "stale"), meta


def open_stored(folder: Path, mode: str, dtype: torch.dtype) -> Stored | None:
    """MODE's stored quantization for DTYPE in FOLDER when it is there and current, else None (load quantizes)."""
    state, meta = _header(folder, mode, dtype)
    if state != "current":
        return None
    path = stored_path(folder, mode, dtype)
    try:
        classes = json.loads(meta["layers"])
        tensors = read_tensors(path)
    except Exception:  # a damaged file must not stop the load: quantizing costs a second, not the chat
        return None
    layers: dict[str, tuple[str, dict[str, torch.Tensor]]] = {p: (str(c), {}) for p, c in classes.items()}
    for name, t in tensors.items():
        layer_path, _, buffer = name.rpartition(".")
        if layer_path in layers:
            layers[layer_path][1][buffer] = t
    return Stored(path, layers)
