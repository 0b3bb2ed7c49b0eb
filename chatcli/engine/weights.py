"""Read a model folder's safetensors weights as views of a memory map; nothing here builds a model.

Apart from loader.py (which orchestrates a load) so that quantization, the stored-quantization file and the
fingerprint can read weights without importing the module that imports them."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import torch

from chatcli.engine.errors import ModelLoadError
from chatcli.engine.safetensors_check import read_header

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def weight_files(folder: Path) -> list[Path]:
    """model.safetensors, or the shards named by model.safetensors.index.json; pickle checkpoints are refused."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"{index}: malformed index ({e})") from None
        files = []
        for name in names:
            p = (folder / name).resolve()
            if not p.is_relative_to(folder.resolve()) or not p.is_file():
                raise ModelLoadError(f"{index}: shard {name!r} is missing or outside the model folder")
            files.append(p)
        return files
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES] if folder.is_dir() else []
    if pickles:
        raise ModelLoadError(
            f"{folder}: only pickle checkpoints ({', '.join(pickles)}); they can run code when loaded, so chatcli refuses them. "
            "Convert to safetensors first"
        )
    raise ModelLoadError(f"{folder}: no model.safetensors; a model folder needs safetensors weights")


def read_tensors(path: Path, maps: list | None = None) -> dict[str, torch.Tensor]:
    """Tensors of one safetensors file as views of a private (copy-on-write) memory map: no copy until written.

    maps: when given, the map is appended to it (see release_file_pages)."""
    header, data_start = read_header(path)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    if maps is not None:
        maps.append(mm)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = TORCH_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ModelLoadError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which chatcli cannot load")
        t = torch.frombuffer(mm, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=data_start + begin) if end > begin else torch.empty(0, dtype=dtype)
        out[name] = t.view(info["shape"])
    return out


def load_state(folder: Path, maps: list | None = None) -> dict[str, torch.Tensor]:
    """All tensors of the folder's safetensors files; a name in two files is an error."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        for name, t in read_tensors(file, maps).items():
            if name in state:
                raise ModelLoadError(f"{file}: tensor {name!r} appears in more than one shard")
            state[name] = t
    return state


def release_file_pages(model) -> None:
    """Let the kernel reclaim the weight file's pages this process has read (they count in its RSS while mapped).

    Once weights are converted, fused or packed, the copies are what is used; the few tensors still viewing the file
    (an embedding, norms) fault their pages back in on access. Nothing writes to the private map, so nothing is lost.
    """
    for mm in getattr(model, "weight_maps", ()):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):  # no madvise on this platform: the pages stay, nothing breaks
            pass
