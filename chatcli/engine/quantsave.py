"""Write a folder's quantized layers to the file quantstore.py opens: load, quantize, save atomically.

Apart from quantstore.py because saving loads a model and opening is part of loading: together they were a circle."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import safetensors.torch
import torch

from chatcli.engine.loader import load_model, resolve_dtype
from chatcli.engine.quant import MODES
from chatcli.engine.quantstore import FORMAT, key, stored_path


def save(folder: Path, mode: str, dtype: str | torch.dtype | None = None) -> tuple[Path, int, float]:
    """Quantize the model in FOLDER to MODE for DTYPE activations and store the result; (file, bytes, seconds).

    The file is written under a temporary name and renamed into place, so a failed write (a full disk) leaves any
    previous file as it was. OSError propagates for the caller to word."""
    if mode not in MODES or mode == "none":
        raise ValueError(f"mode {mode!r}")
    t0 = time.perf_counter()
    dtype = resolve_dtype(dtype)
    record: dict[str, torch.nn.Module] = {}
    load_model(folder, dtype, max_seq_len=1, quant=mode, record=record, use_stored=False)
    layers = {p: layer for p, layer in record.items() if hasattr(layer, "stored")}  # not a "bf16" head (opaque)
    tensors = {f"{p}.{name}": t.contiguous() for p, layer in layers.items() for name, t in layer.stored().items()}
    classes = {p: type(layer).__name__ for p, layer in layers.items()}
    meta = {"format": str(FORMAT), "key": key(folder, mode, dtype), "mode": mode, "dtype": str(dtype), "layers": json.dumps(classes)}
    target = stored_path(folder, mode, dtype)
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target, target.stat().st_size, time.perf_counter() - t0

