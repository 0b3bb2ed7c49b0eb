"""`chatcli import PATH`: a local .gguf file (converted) or a Hugging Face model folder (validated, then copied)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from chatcli.errors import LoadError, UsageError
from chatcli.names import check_name
from chatcli.store.fsutil import disk_error, install, store_lock, store_root, work_dir
from chatcli.store.progress import Progress

# What a model folder may hold that chatcli uses; anything else (pickles, scripts, images) is left behind.
COPY_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.jinja", "LICENSE*", "README*", "NOTICE*")


def slug(text: str) -> str:
    """A store name from a file or folder name: lowercase, other characters become '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return re.sub(r"\.{2,}", ".", name)[:100] or "model"


def validate_hf_folder(folder: Path) -> dict:
    """Check that FOLDER loads: config.json, safetensors headers against the file sizes, and the tokenizer."""
    from chatcli.engine.config import ModelConfig
    from chatcli.engine.loader import check_folder
    from chatcli.engine.models import ARCHITECTURES
    from chatcli.engine.safetensors_check import read_header
    from chatcli.engine.tokenizer import load_tokenizer

    config = ModelConfig.from_folder(folder)
    if config.model_type not in ARCHITECTURES:
        raise LoadError(
            f"{folder}/config.json: model_type {config.model_type!r} is not supported by the local engine "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})"
        )
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
        hint = f"; pickle checkpoints ({', '.join(pickles)}) are refused because loading them can run code" if pickles else ""
        raise LoadError(f"{folder}: no .safetensors weights{hint}; convert the weights to safetensors first")
    check_folder(folder)  # names, shapes and dtypes against the config: what `ask` would refuse is refused here
    params, dtypes = 0, set()
    for f in files:
        header, _ = read_header(f)
        for entry in header.values():
            n = 1
            for d in entry["shape"]:
                n *= d
            params += n
            dtypes.add(entry["dtype"])
    load_tokenizer(folder, vocab_limit=config.vocab_size)
    return {"parameters": params, "dtype": "/".join(sorted(dtypes)), "model_type": config.model_type,
            "context_length": config.max_position_embeddings}


def _copy_folder(src: Path, dest: Path) -> None:
    dest.mkdir()
    for pattern in COPY_PATTERNS:
        for f in src.glob(pattern):
            if f.is_file():  # symlinks (as in a Hugging Face cache snapshot) are followed: the store gets real files
                shutil.copyfile(f, dest / f.name)


def import_path(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    models_dir: str | os.PathLike | None = None,
    dtype: str = "exact",
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Import a .gguf file or an HF folder into the store as NAME (default: from the file name); return its folder."""
    progress = progress or Progress()
    src = Path(path).expanduser()
    if "\x00" in str(path):
        raise UsageError("invalid path: it contains a NUL byte")
    if not src.exists():
        raise UsageError(f"{src} does not exist; pass a .gguf file or a model folder")
    is_gguf = src.is_file()
    if is_gguf:
        with open(src, "rb") as f:
            if f.read(4) != b"GGUF" and src.suffix.lower() != ".gguf":
                raise UsageError(f"{src} is neither a GGUF file nor a model folder")
    elif not (src / "config.json").is_file():
        raise UsageError(f"{src} has no config.json; pass a .gguf file or a Hugging Face model folder")
    name = check_name(slug(src.stem if is_gguf else src.resolve().name) if name is None else name)
    root = store_root(models_dir)
    target = root / name
    with store_lock(root, name):
        if target.exists() and not force:
            raise UsageError(f"model {name!r} is already in the store; choose another --name or pass --force to replace it")
        with work_dir(root, name) as work:
            out = work / "model"
            if is_gguf:
                from chatcli.store.convert import convert_gguf

                out.mkdir()
                convert_gguf(src, out, dtype=dtype, progress=progress,
                             source={"name": name, "source": f"import ({src.resolve()})", "source_file": str(src.resolve())})
            else:
                info = validate_hf_folder(src)
                try:
                    with progress.step(f"copy {src}"):
                        _copy_folder(src, out)
                    (out / "chatcli.json").write_text(
                        json.dumps({**info, "name": name, "source": f"import ({src.resolve()})"}, indent=2) + "\n", encoding="utf-8"
                    )
                except OSError as e:
                    raise disk_error(e, out) from None
            install(out, target, work)
    progress.note(f"imported {src} as {name} into {target}")
    return target
