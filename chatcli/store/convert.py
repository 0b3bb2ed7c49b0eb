"""GGUF file -> Hugging Face model folder (config.json, model.safetensors, tokenizer, generation config, LICENSE)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from chatcli.errors import UsageError
from chatcli.store.archs import plan_for
from chatcli.store.fsutil import disk_error
from chatcli.store.gguf_file import GGUFError, GGUFFile
from chatcli.store.progress import Progress
from chatcli.store.st_write import DTYPES, write_safetensors
from chatcli.store.tokfiles import write_tokenizer

# The GGML types gguf's numpy kernels dequantize and that we test (the common llama.cpp quantizations).
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
CHUNK_ELEMENTS = 1 << 22  # rows are dequantized in chunks of about this many values (16 MB of float32)
INFO_FILE = "chatcli.json"  # where the store records a folder's origin (source, sha256, dtype)
CONVERTER_VERSION = 2  # bump when converted folders change, so caches built by an older converter are redone
# (2: "exact" became the default dtype: folders converted as bfloat16 are converted again)

# What --dtype exact (the default) stores for each GGML type: float tensors as they are, and every block quantization
# dequantized in float32, which is what the GGUF means (gguf's kernels and llama.cpp dequantize in float32, and so does
# transformers loading a GGUF). No 16-bit type holds those values: d * q + m with float16 d and m needs up to 19
# significant bits; in SmolLM2's GGUF float16 holds 70-75 % of a Q4_1 tensor's values and 21 % of the Q8_0
# embedding's exactly, bfloat16 26-32 % and 3 %. bfloat16 moved SmolLM2's greedy answer on a near tie (issue 19).
# The int4 and int8 kernels cannot take the GGUF's own blocks either (bench/gguf_fidelity.py): their scales are
# bfloat16, which cannot hold Q4_0/Q4_1's float16 scales, and int8 has one scale per row, where Q8_0 has one per 32
# values. Re-quantizing the float32 values gives the same codes as the GGUF's (a group's min and max are its block's
# m and m + 15 d), so --quant starts from this folder and loses nothing to a second rounding.
EXACT = "exact"
EXACT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _values(g: GGUFFile, name: str, transform, index: int | None = None) -> Iterator[np.ndarray]:
    """The float32 values of GGUF tensor NAME (its slice INDEX of axis 0, for a stack of experts), in row chunks."""
    from gguf.quants import dequantize

    info = g.tensors[name]
    raw = g.raw(info) if index is None else g.raw(info)[index]
    shape = info.shape if index is None else info.shape[1:]
    try:
        if transform is not None:  # q/k un-permutation reorders rows, so it needs the whole tensor
            yield transform(dequantize(raw, info.ggml_type).reshape(shape))
            return
        rows = raw.reshape(-1, raw.shape[-1])
        step = max(1, CHUNK_ELEMENTS // info.shape[-1])
        for start in range(0, rows.shape[0], step):
            yield dequantize(rows[start:start + step], info.ggml_type)
    except (ValueError, NotImplementedError) as e:  # sizes were checked up front; this would be a kernel's own refusal
        raise GGUFError(f"{g.path}: tensor {name} ({info.type_name}, shape {list(info.shape)}) cannot be dequantized ({e})") from None


def _entries(g: GGUFFile, plan) -> list[tuple[str, str, int | None, tuple[int, ...]]]:
    """(HF name, GGUF name, slice or None, shape) of every tensor to write, in the GGUF's order."""
    out = []
    for name, info in g.tensors.items():
        if name in plan.names:
            out.append((plan.names[name], name, None, info.shape))
        for index, hf in enumerate(plan.splits.get(name, ())):
            out.append((hf, name, index, info.shape[1:]))
    return out


def stored_dtype(type_name: str, dtype: str) -> str:
    """The dtype a tensor of GGML type TYPE_NAME is stored in under --dtype DTYPE."""
    return EXACT_DTYPES.get(type_name, "float32") if dtype == EXACT else dtype


def _main_dtype(entries, stored: dict[str, str]) -> str:
    """config.json's torch_dtype: the stored dtype that holds the most parameters."""
    count: dict[str, int] = {}
    for hf, _, _, shape in entries:
        count[stored[hf]] = count.get(stored[hf], 0) + int(np.prod(shape))
    return max(sorted(count), key=count.__getitem__)


def convert_gguf(
    src: str | Path,
    out: str | Path,
    *,
    dtype: str = EXACT,
    license_text: str | None = None,
    source: dict[str, Any] | None = None,
    progress: Progress | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Convert the GGUF SRC into the (existing, empty) folder OUT; return a summary of what was written.

    dtype: "exact" keeps every value the GGUF holds (float tensors in their own dtype, quantized ones as float32);
    float32, float16 or bfloat16 store every tensor in that dtype (the 16-bit ones round)."""
    if dtype != EXACT and dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r} is not supported for conversion; use one of {', '.join((EXACT, *DTYPES))}")
    out = Path(out)
    progress = progress or Progress(quiet=True)
    with GGUFFile(src) as g:
        plan = plan_for(g)
        entries = _entries(g, plan)
        bad = [(n, g.tensors[n].type_name) for _, n, _, _ in entries if g.tensors[n].type_name not in SUPPORTED_TYPES]
        if bad:
            raise GGUFError(
                f"{g.path}: tensor {bad[0][0]} uses quantization {bad[0][1]}, which the converter cannot dequantize "
                f"(supported: {', '.join(SUPPORTED_TYPES)}); re-export the GGUF with one of those"
            )
        cfg = plan.config
        n_tokens = len(g.meta_str_list("tokenizer.ggml.tokens", None) or [])
        if n_tokens > cfg["vocab_size"]:
            raise GGUFError(f"{g.path}: the vocabulary has {n_tokens} tokens but the embedding only {cfg['vocab_size']} rows")
        stored = {hf: stored_dtype(g.tensors[n].type_name, dtype) for hf, n, _, _ in entries}
        params = sum(int(np.prod(shape)) for *_, shape in entries)
        try:
            tok = write_tokenizer(g, out, cfg["max_position_embeddings"])
            _json(out / "config.json", {**cfg, "torch_dtype": _main_dtype(entries, stored)})
            eos = tok["eos_ids"]
            gen = {k: cfg[k] for k in ("bos_token_id", "pad_token_id") if k in cfg}
            if eos:
                gen["eos_token_id"] = eos if len(eos) > 1 else eos[0]
            _json(out / "generation_config.json", gen)
            by_hf = {hf: (gg, index) for hf, gg, index, _ in entries}
            with progress.step(f"convert {label or Path(src).name}", total=len(entries)) as step:
                write_safetensors(
                    out / "model.safetensors",
                    [(hf, shape) for hf, _, _, shape in entries],
                    lambda hf: _values(g, by_hf[hf][0], plan.transforms.get(by_hf[hf][0]), by_hf[hf][1]),
                    stored,
                    on_tensor=lambda _: step.advance(1),
                )
            lic = license_text or f"License: {g.meta_str('general.license', 'unknown')} (from the GGUF's general.license)\n"
            (out / "LICENSE").write_text(lic, encoding="utf-8")
            info = {
                "architecture": cfg["architectures"][0],
                "model_type": cfg["model_type"],
                "parameters": params,
                "dtype": "/".join(sorted(set(stored.values()))),
                "context_length": cfg["max_position_embeddings"],
                "chat_template": tok["chat_template"],
                "tokenizer": tok["kind"],
                "gguf_name": g.meta_str("general.name", None),
                "gguf_file_type": g.meta_int("general.file_type", 0, 1 << 16, None),
                "converter": CONVERTER_VERSION,
                **(source or {}),
            }
            _json(out / INFO_FILE, info)
        except OSError as e:
            raise disk_error(e, out) from None
    return info

