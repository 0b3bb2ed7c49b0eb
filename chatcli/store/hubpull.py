"""Fetch a hub model with huggingface_hub and make its store folder: list the repo, pick the files (hub.py), show the
size (asking first above 1 GB on a terminal), download into the store's hub cache, check every file's hash, then
link the safetensors folder together or convert the GGUF.

The cache is huggingface_hub's own layout under models/.cache/hub: the client resumes a dropped transfer with a Range
request, HF_HUB_OFFLINE=1 works from it, and a second pull of the same revision downloads nothing. Files reach the
model folder as hard links where the file system allows, so a safetensors model costs its size once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from chatcli.errors import BackendError, ChatcliError, StoreError, UsageError
from chatcli.optional import require
from chatcli.store import hub
from chatcli.store.fsutil import disk_error
from chatcli.store.progress import Progress, Step

CACHE = Path(".cache") / "hub"
LARGE = 10**9  # downloads above this size are shown and, on a terminal, confirmed first
TRUE = ("1", "ON", "YES", "TRUE")  # how huggingface_hub reads its boolean variables
CHUNK = 8 << 20


@dataclass(frozen=True)
class Remote:
    """What the listing says of one file: its size, its git blob id, and for an LFS file its sha256."""

    size: int | None
    sha256: str | None = None
    blob_id: str | None = None


def endpoint() -> str | None:
    """HF_ENDPOINT as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in TRUE


def _where() -> str:
    return endpoint() or "https://huggingface.co"


def _translate(e: Exception, spec: hub.HubSpec, revision: str, hh) -> ChatcliError:
    """One line for what the hub client raised: a login for 401/403, the name for a 404, else the network."""
    errors = hh.errors
    where = _where()
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, errors.GatedRepoError) or status in (401, 403):
        token = "the token sent (HF_TOKEN or `hf auth login`) has no access; " if hh.get_token() else ""
        return BackendError(
            f"{where} refused {spec.repo} (HTTP {status}): it is gated or private; {token}accept its terms on its model "
            f"page ({where}/{spec.repo}), then set HF_TOKEN=hf_... or run `hf auth login`, and pull again"
        )
    if isinstance(e, errors.RevisionNotFoundError):
        return UsageError(f"{spec.repo} has no revision {revision!r} on {where}; check --revision (a branch, tag or commit)")
    if isinstance(e, getattr(errors, "RemoteEntryNotFoundError", None) or errors.EntryNotFoundError):
        return UsageError(f"{spec.repo} on {where} lost a file of its listing ({' '.join(str(e).split())[:160]}); pull again")
    if isinstance(e, errors.RepositoryNotFoundError):
        return UsageError(f"no model {spec.repo} on {where} (HTTP {status or 404}); check ORG/REPO as the model page spells it")
    if offline():
        return BackendError(f"HF_HUB_OFFLINE is set and {spec} (revision {revision}) is not complete in the hub cache; "
                            "unset HF_HUB_OFFLINE to download it")
    reason = " ".join(str(e).split())[:200] or type(e).__name__
    return BackendError(
        f"cannot download {spec} from {where} ({type(e).__name__}: {reason}); check the network and HF_ENDPOINT, or "
        "download the folder elsewhere and run `chatcli import PATH`"
    )


def _listing(hh, spec: hub.HubSpec, revision: str, cache: Path) -> tuple[str, dict[str, Remote]]:
    """(commit, {file: Remote}) from the hub, or from the cache when offline."""
    if not offline():
        info = hh.HfApi(endpoint=endpoint()).model_info(spec.repo, revision=revision, files_metadata=True)
        files = {s.rfilename: Remote(s.size, s.lfs.sha256 if s.lfs else None, s.blob_id) for s in info.siblings or []}
        return info.sha, files
    try:
        repos = hh.scan_cache_dir(cache).repos
    except hh.CacheNotFound:
        repos = frozenset()
    for repo in repos:
        if repo.repo_id != spec.repo or repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            if revision in rev.refs or rev.commit_hash == revision:
                files = {f.file_path.relative_to(rev.snapshot_path).as_posix(): Remote(f.size_on_disk) for f in rev.files}
                return rev.commit_hash, files
    raise BackendError(f"HF_HUB_OFFLINE is set and {spec} (revision {revision}) is not in the hub cache ({cache}); "
                       "unset HF_HUB_OFFLINE to download it")


def _bar(step: Step):
    """A stand-in for the tqdm class huggingface_hub draws with: its byte counts move our own bar instead. It has
    update_transfer, so a Xet download (bytes received, then bytes written) reports through one bar and counts once."""

    class Bytes:
        def __init__(self, *args, initial=0, **kwargs):
            if initial:
                step.advance(initial)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            step.advance(n or 0)

        def close(self):
            pass

        def update_transfer(self, n=1):
            pass

        def set_postfix_str(self, *args, **kwargs):
            pass

        set_transfer_postfix_str = set_postfix_str

    return Bytes


def _confirm(spec: hub.HubSpec, text: str, size: int, yes: bool, progress: Progress) -> None:
    """Show what will be downloaded; above LARGE, ask on a terminal. A pipe never waits: it proceeds, as the default
    model's first pull does (a download changes nothing that was there; `models rm`, which does, refuses instead)."""
    if size < LARGE or yes:
        progress.note(text)
        return
    if not sys.stdin.isatty():
        progress.note(f"{text} (not asking: stdin is not a terminal)")
        return
    sys.stderr.write(f"{text}. Download? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise UsageError(f"not downloading {spec}; nothing changed (--yes skips the question)")


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        if algo == "sha1":  # git's blob id, the ETag of a file kept outside LFS
            h.update(b"blob %d\0" % path.stat().st_size)
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verify(spec: hub.HubSpec, name: str, pointer: Path, remote: Remote | None) -> str:
    """The file's sha256 after checking it: an LFS file against the listing's sha256 (offline: the ETag the cache
    names the blob by), a small one against its git blob id. A file that disagrees is deleted from the cache, so the
    next pull fetches it again."""
    blob = pointer.resolve()
    remote = remote or Remote(None)
    expected = remote.sha256 or (blob.name if re.fullmatch(r"[0-9a-f]{64}", blob.name) else None)
    sha256 = _digest(blob, "sha256")
    got = sha256
    if expected is None and remote.blob_id and re.fullmatch(r"[0-9a-f]{40}", remote.blob_id):
        expected, got = remote.blob_id, _digest(blob, "sha1")
    if expected is not None and got != expected:
        for p in (pointer, blob):
            p.unlink(missing_ok=True)
        raise StoreError(
            f"checksum mismatch for {name} of {spec.repo}: the hub lists {expected}, the download hashes to {got}; it is "
            f"corrupt or {_where()} serves other bytes. The file was deleted from the cache: pull again"
        )
    return sha256


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copyfile(src, dest)


def make_folder(spec: hub.HubSpec, work: Path, *, root: Path, name: str, revision: str | None = None,
                dtype: str = "exact", yes: bool = False, progress: Progress) -> Path:
    """Download SPEC (at REVISION) and build the model folder inside WORK; return it."""
    hh = require("huggingface_hub", f"pulling {spec}", "hub")
    revision = revision or "main"
    cache = root / CACHE
    try:
        commit, files = _listing(hh, spec, revision, cache)
        kind, names, note = hub.choose(spec, files)
        if note:
            progress.note(note)

        def fetch(names: list[str], step: Step | None = None) -> dict[str, Path]:
            # Always our stand-in bar: the client's own tqdm would draw on the terminal beside ours.
            return {n: Path(hh.hf_hub_download(spec.repo, n, revision=commit, cache_dir=str(cache), endpoint=endpoint(),
                                               local_files_only=offline(), tqdm_class=_bar(step or Step())))
                    for n in names}

        pointers = {}
        if hub.INDEX in names:
            pointers = fetch([hub.INDEX])
            try:
                index = json.loads(pointers[hub.INDEX].read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise UsageError(f"{spec.repo}: {hub.INDEX} is not readable JSON ({e})") from None
            names = hub.shards(names, index, spec.repo)
        todo = [n for n in names if n not in pointers and not isinstance(
            hh.try_to_load_from_cache(spec.repo, n, cache_dir=str(cache), revision=commit), str)]
        size = sum((files[n].size or 0) for n in todo)
        shown = names[0] if kind == "gguf" else f"{len(names)} files"
        _confirm(spec, f"{spec}: {shown}, {hub.human_size(size)} to download into {cache}" if todo else
                 f"{spec}: {shown}, already in the hub cache ({cache})", size, yes, progress)
        with progress.step(f"download {spec}", total=size or None, unit="B") as step:
            pointers.update(fetch([n for n in names if n not in pointers], step))
    except ChatcliError:
        raise
    except OSError as e:
        if isinstance(e, hh.errors.HfHubHTTPError) or e.errno is None:
            raise _translate(e, spec, revision, hh) from None
        raise disk_error(e, cache) from None
    except Exception as e:  # noqa: BLE001 - the client raises many types (HTTP, offline, connection, timeouts)
        raise _translate(e, spec, revision, hh) from None
    total = sum(p.resolve().stat().st_size for p in pointers.values())
    with progress.step(f"verify {spec}", total=total, unit="B") as step:
        sums = {}
        for n in names:
            sums[n] = _verify(spec, n, pointers[n], files.get(n))
            step.advance(pointers[n].resolve().stat().st_size)
    source = {"name": name, "source": str(spec), "repo": spec.repo, "revision": commit, "files": sums,
              **({"endpoint": endpoint()} if endpoint() else {})}
    out = work / "model"
    out.mkdir()
    if kind == "gguf":
        from chatcli.store.convert import convert_gguf

        license_text = next((pointers[n].read_text(encoding="utf-8", errors="replace") for n in names
                             if n != names[0]), None)
        convert_gguf(pointers[names[0]].resolve(), out, dtype=dtype, license_text=license_text, progress=progress,
                     label=name, source={**source, "sha256": sums[names[0]]})
        return out
    from chatcli.store.importer import validate_hf_folder

    try:
        for n in names:
            _link(pointers[n].resolve(), out / n)
    except OSError as e:
        raise disk_error(e, out) from None
    info = validate_hf_folder(out)
    try:
        (out / "chatcli.json").write_text(json.dumps({**info, **source}, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise disk_error(e, out) from None
    return out
