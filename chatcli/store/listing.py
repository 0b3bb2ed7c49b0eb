"""What is in the store: one ModelInfo per model folder, read from config.json, chatcli.json and safetensors headers."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chatcli import settings
from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.safetensors_check import read_header
from chatcli.engine.tokenizer import check_tokenizer_config, read_json_object
from chatcli.errors import UsageError
from chatcli.names import NAME_RE, check_name
from chatcli.store.fsutil import folder_size

ST_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


@dataclass
class ModelInfo:
    """One row of `chatcli models`."""

    name: str
    path: str
    architecture: str
    parameters: int | None
    dtype: str
    size_bytes: int
    context_length: int | None
    chat_template: bool
    default: bool
    problem: str = ""  # set when the folder is not a usable model

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for --json)."""
        return asdict(self)


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _weights_summary(folder: Path) -> tuple[int | None, str, str]:
    """Parameter count, dtype and what is wrong, from the safetensors headers (checked; no tensor data is read)."""
    params, dtypes = 0, set()
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None, "?", "no safetensors weights"
    for f in files:
        try:
            header, _ = read_header(f)
        except ModelLoadError as e:
            return None, "?", _short(e, folder)
        for entry in header.values():
            count = 1
            for d in entry["shape"]:
                count *= d
            params += count
            dtypes.add(ST_DTYPES.get(entry["dtype"], entry["dtype"]))
    return params, "/".join(sorted(dtypes)) or "?", ""


def _short(error: Exception, folder: Path) -> str:
    """An engine error without the folder's path, which the listing shows in its own column."""
    return str(error).replace(f"{folder}/", "").replace(f"{folder}: ", "")


def _load_problem(folder: Path) -> str:
    """What the engine's config and tokenizer_config checks say of FOLDER (without torch), or ""."""
    try:
        ModelConfig.from_folder(folder)
        tok_file = folder / "tokenizer_config.json"
        check_tokenizer_config(read_json_object(tok_file), tok_file)
    except ModelLoadError as e:
        return _short(e, folder)
    return ""


def model_info(folder: Path, default: str | None = None) -> ModelInfo:
    """Describe one model folder; a broken one is described too, with what is wrong in `problem`, so that one bad
    folder never hides the rest of the store."""
    cfg = _json(folder / "config.json")
    tok = _json(folder / "tokenizer_config.json")
    params, dtype, problem = _weights_summary(folder)
    problem = problem or _load_problem(folder)
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else cfg.get("model_type", "?")
    template = bool(tok.get("chat_template")) or (folder / "chat_template.jinja").is_file()
    context = cfg.get("max_position_embeddings")
    return ModelInfo(
        name=folder.name, path=str(folder), architecture=str(arch), parameters=params, dtype=dtype,
        size_bytes=folder_size(folder), context_length=context if isinstance(context, int) and not isinstance(context, bool) else None,
        chat_template=template, default=folder.name == (default or settings.DEFAULT_MODEL), problem=problem,
    )


def list_models(models_dir: str | os.PathLike | None = None, default: str | None = None) -> list[ModelInfo]:
    """Every model folder in the store, by name; hidden folders (.cache, .tmp-*) are skipped."""
    root = settings.models_dir(models_dir)
    if not root.is_dir():
        return []
    return [
        model_info(p, default)
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".") and NAME_RE.match(p.name)
    ]


def show(name: str, models_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Everything `chatcli models show` prints: the summary, config.json, generation config, template, origin."""
    root = settings.models_dir(models_dir)
    folder = root / check_name(name)
    if not folder.is_dir():
        from chatcli.store.catalog import load_catalog, suggest

        names = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        raise UsageError(
            f"model {name!r} is not in the store ({root}){suggest(name, names + list(load_catalog(models_dir)))}; "
            f"`chatcli models` lists what is there"
        )
    tok = _json(folder / "tokenizer_config.json")
    template = tok.get("chat_template")
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8", errors="replace")
    return {
        "info": model_info(folder).as_dict(),
        "config": _json(folder / "config.json"),
        "generation_config": _json(folder / "generation_config.json"),
        "origin": _json(folder / "chatcli.json"),
        "special_tokens": {k: tok.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token")},
        "chat_template": template,
        "files": sorted(p.name for p in folder.iterdir()),
        "quantized": _quantized(folder),
    }


def _quantized(folder: Path) -> list[dict[str, Any]]:
    """The folder's stored quantizations: mode, dtype, size and whether loading would use them (which imports torch,
    so only when there are some)."""
    files = sorted((folder / "quantized").glob("*-*.safetensors"))
    if not files:
        return []
    from chatcli.engine import quantstore
    from chatcli.engine.loader import resolve_dtype

    out = []
    for f in files:
        mode, _, dtype = f.name.removesuffix(".safetensors").partition("-")
        try:
            state = quantstore.status(folder, mode, resolve_dtype(dtype))
        except Exception:  # a stray file named like one: listed as what it is
            state = "unreadable"
        out.append({"file": f.name, "mode": mode, "dtype": dtype, "size_bytes": f.stat().st_size, "status": state})
    return out
