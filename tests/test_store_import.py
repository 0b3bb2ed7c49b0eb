"""`chatcli import PATH`: a .gguf file is converted, a Hugging Face folder is validated and copied, bad input refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.storefakes import make_gguf


def cli(*args):
    return subprocess.run([sys.executable, "-m", "chatcli", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=dict(os.environ))


def error_line(proc) -> str:
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("chatcli: error: "), proc.stderr
    return line


@pytest.fixture
def store(_isolated_home):
    return _isolated_home / "models"


def test_import_gguf_then_name_clash_then_force(store, tmp_path):
    src = tmp_path / "My Model.Q8_0.gguf"
    make_gguf(src, qtype="Q8_0")
    proc = cli("import", str(src))
    assert proc.returncode == 0, proc.stderr
    folder = store / "my-model.q8_0"  # the name comes from the file name, made store-safe
    assert proc.stdout.strip() == f"my-model.q8_0: ready at {folder}"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    origin = json.loads((folder / "chatcli.json").read_text())
    assert origin["source"].startswith("import (") and origin["dtype"] == "float32"

    clash = cli("import", str(src))
    assert clash.returncode == 2 and "already in the store" in error_line(clash)
    renamed = cli("import", str(src), "--name", "other", "--dtype", "float32")
    assert renamed.returncode == 0 and (store / "other").is_dir()
    forced = cli("import", str(src), "--force")
    assert forced.returncode == 0
    assert not list(store.glob(".tmp-*"))


def test_import_hf_folder_copies_only_what_is_used(store, tiny_llama_dir, tmp_path):
    src = tmp_path / "Tiny-Llama"
    shutil.copytree(tiny_llama_dir, src)
    (src / "notes.py").write_text("print('not copied')")
    (src / "tokenizer.json").rename(tmp_path / "tokenizer.json")
    (src / "tokenizer.json").symlink_to(tmp_path / "tokenizer.json")  # like a Hugging Face cache snapshot
    proc = cli("import", str(src))
    assert proc.returncode == 0, proc.stderr
    folder = store / "tiny-llama"
    names = {p.name for p in folder.iterdir()}
    assert "notes.py" not in names and {"config.json", "model.safetensors", "chatcli.json"} <= names
    assert (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.json").is_symlink()
    listing = cli("models")
    assert any(line.startswith("tiny-llama\t") for line in listing.stdout.splitlines())


def test_hf_folder_with_only_pickle_weights_is_refused(store, tiny_llama_dir, tmp_path):
    src = tmp_path / "pickled"
    shutil.copytree(tiny_llama_dir, src)
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    proc = cli("import", str(src))
    assert proc.returncode == 3
    line = error_line(proc)
    assert "no .safetensors weights" in line and "pytorch_model.bin" in line and "refused" in line
    assert not (store / "pickled").exists() and not list(store.glob(".tmp-*"))


def test_hf_folder_with_broken_tokenizer_is_refused(store, tiny_llama_dir, tmp_path):
    src = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, src)
    (src / "tokenizer.json").write_text("{not json")
    proc = cli("import", str(src))
    assert proc.returncode == 3 and "tokenizer.json" in error_line(proc)
    assert not (store / "broken").exists()


def test_hf_folder_with_truncated_safetensors_is_refused(store, tiny_llama_dir, tmp_path):
    src = tmp_path / "truncated"
    shutil.copytree(tiny_llama_dir, src)
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    proc = cli("import", str(src))
    assert proc.returncode == 3 and "model.safetensors" in error_line(proc)


@pytest.mark.parametrize("kind", ["missing", "text", "folder"])
def test_not_a_model(store, tmp_path, kind):
    path = tmp_path / "thing"
    if kind == "text":
        path.write_text("hello")
    elif kind == "folder":
        path.mkdir()
    proc = cli("import", str(path))
    assert proc.returncode == 2
    assert str(path) in error_line(proc)


def test_bad_name_is_refused(store, tmp_path):
    src = tmp_path / "m.gguf"
    make_gguf(src)
    for name in ("../escape", "a/b", ".hidden", ""):
        proc = cli("import", str(src), "--name", name)
        assert proc.returncode == 2 and "invalid model name" in error_line(proc), name
    assert not store.exists() or {p.name for p in store.iterdir()} <= {".locks"}


@pytest.mark.parametrize(("changes", "words"), [
    ({"llama.block_count": (2**32 - 1, 4, None)}, ["llama.block_count is the number 4294967295"]),
    ({"llama.block_count": (3, 4, None)}, ["block_count is 3 but the file has tensors for 2 blocks"]),
    ({"llama.attention.head_count": (8, 4, None)}, ["tensor blk.0.attn_k.weight has shape [32, 64]", "implies [16, 64]"]),
    ({"llama.context_length": (2**40, 10, None)}, ["llama.context_length is the number 1099511627776", "[1, 16777216]"]),
    ({"general.architecture": (["llama"], 9, 8)}, ["general.architecture is an array of 1 items (str)", "expected a string"]),
    ({"llama.attention.layer_norm_rms_epsilon": ("1e-5", 8, None)}, ["layer_norm_rms_epsilon is the string '1e-5'"]),
    ({"tokenizer.ggml.tokens": ([1, 2, 3], 9, 5)}, ["tokenizer.ggml.tokens is an array of 3 items (int)"]),
])
def test_import_of_gguf_with_bad_metadata_is_one_line_exit_3_and_leaves_nothing(store, tmp_path, changes, words):
    from tests.test_fuzz_gguf_values import write

    src = tmp_path / "bad.gguf"
    write(src, "llama", changes)
    proc = cli("import", str(src), "--name", "bad")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    line = error_line(proc)
    assert str(src) in line
    for word in words:
        assert word in line, line
    assert not (store / "bad").exists() and not list(store.glob(".tmp-*"))


def test_import_of_a_truncated_gguf_says_truncated(store, tmp_path):
    src = tmp_path / "short.gguf"
    src.write_bytes(b"GGUF\x03\x00")
    proc = cli("import", str(src))
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1, proc.stderr
    assert "truncated: 6 bytes, but a GGUF header needs at least 24" in error_line(proc)
    assert not [p for p in store.glob("*") if p.name != ".locks"]
