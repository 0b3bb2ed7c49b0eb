"""Hub model specs and the choice of files, without the network: `hf:ORG/REPO`, `hf:ORG/REPO:QUANT` and
`hf:ORG/REPO/FILE.gguf`, the store name each one gets, and which files of a repo listing make the model.

resolve_model uses this to know a spec's store name, so it must not import huggingface_hub (hubpull.py does).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from chatcli.errors import UsageError
from chatcli.names import check_name

PREFIX = "hf:"
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ +-]{0,200}(/[A-Za-z0-9][A-Za-z0-9._ +-]{0,200}){0,3}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
SPLIT_RE = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.I)
DEFAULT_QUANT = "Q4_K_M"  # what llama.cpp's -hf and ollama's hf.co/ pick when a GGUF repo is named without a tag
# A model folder's files in a safetensors repo (top level only: original/, onnx/ and the like are other formats).
FOLDER_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.jinja", "LICENSE*", "README*", "NOTICE*")
LICENSE_PATTERNS = ("LICENSE*", "NOTICE*")
INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class HubSpec:
    """A parsed hf: spec: the repo, and for a GGUF repo the quantization tag or the file."""

    repo: str
    quant: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        return PREFIX + self.repo + (f":{self.quant}" if self.quant else "") + (f"/{self.file}" if self.file else "")

    @property
    def store_name(self) -> str:
        """The folder name in the store: the file's stem, else the repo's name and the tag, lowercase (Qwen/Qwen3-0.6B
        and ggml-org/Qwen3-0.6B-GGUF stay apart; two orgs' same-named repos are told apart by the folder's source)."""
        if self.file:
            base = PurePosixPath(self.file).name[: -len(".gguf")]
        else:
            base = self.repo.split("/", 1)[1] + (f"-{self.quant}" if self.quant else "")
        name = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._")
        return check_name(re.sub(r"\.{2,}", ".", name)[:100] or "model")


def is_spec(text: str) -> bool:
    return text.startswith(PREFIX)


def same_source(folder_source: object, spec: HubSpec) -> bool:
    """Whether a store folder's recorded source (chatcli.json) is SPEC (tags and names compare without case)."""
    return isinstance(folder_source, str) and folder_source.lower() == str(spec).lower()


def parse(text: str) -> HubSpec:
    """hf:ORG/REPO, hf:ORG/REPO:QUANT or hf:ORG/REPO/FILE.gguf; anything else is a UsageError naming the forms."""
    body = text[len(PREFIX):] if is_spec(text) else text
    forms = "use hf:ORG/REPO, hf:ORG/REPO:QUANT (a GGUF repo) or hf:ORG/REPO/FILE.gguf"
    if "\x00" in body or ".." in body or "\\" in body:
        raise UsageError(f"invalid hub id {text!r}: {forms}")
    parts = body.split("/", 2)
    if len(parts) == 3:
        repo, file = "/".join(parts[:2]), parts[2]
        if not REPO_RE.match(repo) or not FILE_RE.match(file) or not file.lower().endswith(".gguf"):
            raise UsageError(f"invalid hub id {text!r}: a file after ORG/REPO must be a .gguf file; {forms}")
        return HubSpec(repo, file=file)
    repo, _, tag = body.partition(":")
    if not REPO_RE.match(repo) or (_ and not TAG_RE.match(tag)):
        raise UsageError(f"invalid hub id {text!r}: {forms}, with letters, digits, '.', '_' and '-'")
    return HubSpec(repo, quant=tag or None)


def check_revision(revision: object) -> str:
    """A branch, tag or commit: nothing a URL or the cache's refs/ folder could read as a path."""
    if not isinstance(revision, str) or not REVISION_RE.match(revision) or ".." in revision:
        raise UsageError(f"invalid revision {revision!r}: use a branch, tag or commit (letters, digits, '.', '_', '-', '/')")
    return revision


def quant_tag(filename: str) -> str:
    """The quantization a GGUF file name ends in (Qwen3-4B-UD-Q4_K_XL.gguf -> Q4_K_XL)."""
    stem = PurePosixPath(filename).name[: -len(".gguf")]
    return re.split(r"[-.]", stem)[-1] or stem


def _has_tag(filename: str, tag: str) -> bool:
    stem = PurePosixPath(filename).name[: -len(".gguf")]
    return re.search(rf"(?:^|[-._]){re.escape(tag)}(?:$|[-.])", stem, re.I) is not None


def ggufs(files) -> list[str]:
    """The model GGUFs of a listing (vision projectors, mmproj-*, are not language models)."""
    return sorted(f for f in files if f.lower().endswith(".gguf") and not PurePosixPath(f).name.lower().startswith("mmproj"))


def _choices(spec: HubSpec, names: list[str]) -> str:
    listed = ", ".join(f"{quant_tag(f)} ({f})" for f in names)
    return f"choices: {listed}; pick one with hf:{spec.repo}:QUANT or hf:{spec.repo}/FILE.gguf"


def _top(files, patterns) -> list[str]:
    return sorted(f for f in files if "/" not in f and any(fnmatch.fnmatchcase(f, p) for p in patterns))


def choose(spec: HubSpec, files) -> tuple[str, list[str], str | None]:
    """('gguf' | 'safetensors', the files to fetch, a note on a default pick) for SPEC given the repo's FILES."""
    files = list(files)
    models = ggufs(files)
    licenses = _top(files, LICENSE_PATTERNS)
    if spec.file:
        if spec.file not in files:
            near = f"; {_choices(spec, models)}" if models else ""
            raise UsageError(f"{spec.repo} has no file {spec.file!r}{near}")
        return "gguf", _single(spec, spec.file) + licenses, None
    if spec.quant:
        if not models:
            raise UsageError(f"{spec.repo} has no GGUF files, so :{spec.quant} picks nothing; pull hf:{spec.repo} for its safetensors")
        hits = [f for f in models if _has_tag(f, spec.quant)]
        if len(hits) != 1:
            what = "no GGUF file" if not hits else f"{len(hits)} GGUF files"
            raise UsageError(f"{spec.repo} has {what} for quantization {spec.quant}; {_choices(spec, hits or models)}")
        return "gguf", _single(spec, hits[0]) + licenses, None
    weights = _top(files, ("*.safetensors",))
    if weights:
        folder = _top(files, FOLDER_PATTERNS)
        if INDEX not in files and "model.safetensors" in weights:  # other copies (consolidated.*) are not the HF layout
            folder = [f for f in folder if not f.endswith(".safetensors") or f == "model.safetensors"]
        return "safetensors", folder, None
    if len(models) == 1:
        return "gguf", _single(spec, models[0]) + licenses, None
    default = [f for f in models if _has_tag(f, DEFAULT_QUANT)]
    if len(default) == 1:
        note = f"picked {default[0]} ({DEFAULT_QUANT}, the default); hf:{spec.repo}:QUANT picks another"
        return "gguf", _single(spec, default[0]) + licenses, note
    if models:
        raise UsageError(f"{spec.repo} holds {len(models)} GGUF files and none is {DEFAULT_QUANT}; {_choices(spec, models)}")
    shown = ", ".join(sorted(files)[:12]) or "nothing"
    raise UsageError(f"{spec.repo} has neither safetensors weights nor GGUF files (it has: {shown}); pickle checkpoints "
                     "are refused because loading them can run code")


def _single(spec: HubSpec, name: str) -> list[str]:
    if SPLIT_RE.search(name):
        raise UsageError(f"{spec.repo}: {name} is one part of a split GGUF, which chatcli cannot convert; pick a smaller quantization")
    return [name]


def shards(files: list[str], index: dict, repo: str) -> list[str]:
    """The folder's files when an index names the shards: only those shards (a repo may also hold consolidated.safetensors)."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise UsageError(f"{repo}: {INDEX} has no weight_map; the repo's index is broken")
    wanted = set(weight_map.values())
    missing = sorted(wanted - set(files))
    if missing:
        raise UsageError(f"{repo}: {INDEX} names {missing[0]}, which the repo does not hold")
    return [f for f in files if not f.endswith(".safetensors") or f in wanted]


def human_size(n: int, digits: int = 2) -> str:
    """N bytes in decimal units (a download's size as the hub shows it), with DIGITS after the point."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.{digits}f} {unit}"
        n /= 1000
    return f"{n:.{digits}f} TB"
