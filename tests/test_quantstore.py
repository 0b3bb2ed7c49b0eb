"""Stored quantized weights (`chatcli models quantize NAME MODE`, engine/quantstore.py) on tiny random models: a load
from the stored file computes exactly what quantizing at load computes, without quantizing; a stale or damaged file
is ignored; the command writes atomically and refuses bad input with one line (issue 6)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch

from chatcli.engine import linear as L
from chatcli.engine import quantsave, quantstore
from chatcli.engine.loader import load_model


def _copy(tiny_model_factory, arch: str, tmp_path):
    folder = tmp_path / f"m-{arch}"
    shutil.copytree(tiny_model_factory(arch), folder)
    return folder


def _outputs(model) -> list[torch.Tensor]:
    """Logits of a prompt long enough for the int4 dense path, then of three decode steps."""
    ids = torch.randint(0, 300, (1, L.INT4_DENSE_MIN_TOKENS + 4), generator=torch.Generator().manual_seed(5))
    out = [model(ids, 0)]
    pos = ids.shape[1]
    for token in (7, 8, 9):
        out.append(model(torch.tensor([[token]]), pos))
        pos += 1
    return out


def _no_quantizing(monkeypatch):
    """Quantizing at load raises: a load that still works has taken every layer from the stored file."""
    def refuse(*args, **kwargs):
        raise AssertionError("quantized at load")

    monkeypatch.setattr(L, "quantize_int4_groups", refuse)
    monkeypatch.setattr(L, "quantize_int8_rows", refuse)


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("arch", ["llama", "llama_tied", "qwen2", "gemma3"])  # a tied unembedding; q/k/v biases
def test_stored_quantization_computes_exactly_what_quantizing_at_load_does(tiny_model_factory, tmp_path, monkeypatch, mode, arch):
    folder = _copy(tiny_model_factory, arch, tmp_path)
    path, size, _ = quantsave.save(folder, mode, "bfloat16")
    assert path == folder / "quantized" / f"{mode}-bfloat16.safetensors" and path.stat().st_size == size
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left
    assert quantstore.status(folder, mode, torch.bfloat16) == "current"
    fresh = load_model(folder, "bfloat16", quant=mode, use_stored=False)
    assert fresh.quantized_from is None
    with monkeypatch.context() as m:
        _no_quantizing(m)
        stored = load_model(folder, "bfloat16", quant=mode)
    assert stored.quantized_from == path
    for got, want in zip(_outputs(stored), _outputs(fresh)):
        assert torch.equal(got, want)
    # The stored file is for bfloat16 activations: a float32 load quantizes as before.
    assert load_model(folder, "float32", quant=mode).quantized_from is None


def test_changed_weights_make_the_stored_file_stale(tiny_model_factory, tmp_path):
    folder = _copy(tiny_model_factory, "llama", tmp_path)
    quantsave.save(folder, "int4", "bfloat16")
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights["model.layers.0.mlp.down_proj.weight"] = weights["model.layers.0.mlp.down_proj.weight"] * 2
    save_file(weights, folder / "model.safetensors")
    assert quantstore.status(folder, "int4", torch.bfloat16) == "stale"
    model = load_model(folder, "bfloat16", quant="int4")
    assert model.quantized_from is None  # quantized from the new weights, not read from the old file
    for got, want in zip(_outputs(model), _outputs(load_model(folder, "bfloat16", quant="int4", use_stored=False))):
        assert torch.equal(got, want)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_stored_file_is_ignored(tiny_model_factory, tmp_path, damage):
    folder = _copy(tiny_model_factory, "llama", tmp_path)
    path, size, _ = quantsave.save(folder, "int4", "bfloat16")
    if damage == "truncated":  # the header (and its key) intact, the tensors cut short
        os.truncate(path, size - 1000)
    else:
        path.write_bytes(b"\x00" * 64)
    assert quantstore.status(folder, "int4", torch.bfloat16) == ("current" if damage == "truncated" else "unreadable")
    model = load_model(folder, "bfloat16", quant="int4")
    assert model.quantized_from is None
    for got, want in zip(_outputs(model), _outputs(load_model(folder, "bfloat16", quant="int4", use_stored=False))):
        assert torch.equal(got, want)


def test_stored_tensors_of_another_shape_are_refused_by_the_layer():
    layer = torch.nn.Linear(64, 128)
    good = L.Int4Linear(layer, 32).stored()
    assert torch.equal(L.Int4Linear(layer, 32, stored=good).weight_int4, good["weight_int4"])
    with pytest.raises(ValueError, match="scales_and_zeros"):
        L.Int4Linear(layer, 64, stored=good)  # another group size
    with pytest.raises(ValueError, match="weight_int8 is missing"):
        L.Int8Linear(layer, stored={"scales": torch.ones(128, dtype=torch.bfloat16)})


def test_a_failed_write_keeps_the_previous_file(tiny_model_factory, tmp_path, monkeypatch):
    """A full disk cannot be made here on purpose: the library's writer is made to fail the way it would (the test
    says so), after writing part of the file."""
    folder = _copy(tiny_model_factory, "llama", tmp_path)
    path, _, _ = quantsave.save(folder, "int8", "bfloat16")
    before = path.read_bytes()
    import safetensors.torch

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError):
        quantsave.save(folder, "int8", "bfloat16")
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == [path.name]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "chatcli", *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env=dict(os.environ))


def test_models_quantize_command(_isolated_home, tiny_model_factory):
    store = _isolated_home / "models"
    store.mkdir()
    shutil.copytree(tiny_model_factory("llama"), store / "tiny")
    ask = ("ask", "--model", "tiny", "--quant", "int4", "--dtype", "bfloat16", "--temperature", "0", "--max-tokens", "8",
           "--no-save", "hello there")
    before = cli(*ask)
    assert before.returncode == 0, before.stderr

    proc = cli("models", "quantize", "tiny", "int4", "--dtype", "bfloat16")
    assert proc.returncode == 0, proc.stderr
    target = store / "tiny" / "quantized" / "int4-bfloat16.safetensors"
    assert target.is_file() and str(target) in proc.stdout and "`--quant int4` loads them" in proc.stdout
    show = cli("models", "show", "tiny")
    assert "stored quantization: int4 for bfloat16 activations" in show.stdout and "current" in show.stdout
    after = cli(*ask)
    assert after.returncode == 0 and after.stdout == before.stdout  # the same reply, from the stored weights
    assert "stored" not in after.stderr

    # New weights: the stored file no longer fits. The answer still comes, and one line says how to store them again.
    from safetensors.torch import load_file, save_file

    weights = load_file(store / "tiny" / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"] * 1.5
    save_file(weights, store / "tiny" / "model.safetensors")
    stale = cli(*ask)
    assert stale.returncode == 0 and stale.stdout.strip(), stale.stderr
    assert stale.stderr.strip().splitlines() == [
        "chatcli: the stored int4 weights of tiny are stale, so they were quantized at load; "
        "`chatcli models quantize tiny int4` stores them again"]
    assert "stale (`chatcli models quantize tiny int4` remakes it)" in cli("models", "show", "tiny").stdout

    for args, needle in [(("models", "quantize", "nosuch", "int4"), "is not in the store"),
                         (("models", "quantize", "tiny", "int3"), "int3"),
                         (("models", "quantize", "../tiny", "int4"), "tiny")]:
        bad = cli(*args)
        assert bad.returncode == 2 and needle in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)
