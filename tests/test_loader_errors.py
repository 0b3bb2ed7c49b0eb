"""Bad model folders: each gives its own clear error, before anything is allocated, and no traceback from the CLI."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.loader import load_model
from chatcli.engine.safetensors_check import read_header


def write_raw(path, header: dict, data: bytes, header_len: int | None = None):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


@pytest.fixture
def model_copy(tmp_path, tiny_llama_dir):
    dst = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, dst)
    return dst


def test_truncated_file(model_copy):
    f = model_copy / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_model(model_copy, "float32")


def test_tiny_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"abc")
    with pytest.raises(ModelLoadError, match="truncated safetensors file"):
        read_header(tmp_path / "x.safetensors")


def test_header_length_past_end(tmp_path):
    f = write_raw(tmp_path / "x.safetensors", {}, b"", header_len=10**12)
    with pytest.raises(ModelLoadError, match="points past the end of the file"):
        read_header(f)


def test_header_not_utf8_or_json(tmp_path):
    f = tmp_path / "x.safetensors"
    f.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{}")
    with pytest.raises(ModelLoadError, match="not UTF-8"):
        read_header(f)
    f.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        read_header(f)


def test_overlapping_offsets(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    with pytest.raises(ModelLoadError, match="overlaps"):
        read_header(write_raw(tmp_path / "x.safetensors", header, bytes(12)))


def test_gap_between_tensors(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
    }
    with pytest.raises(ModelLoadError, match="gap of 4 bytes"):
        read_header(write_raw(tmp_path / "x.safetensors", header, bytes(12)))


def test_shape_times_dtype_mismatch(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    with pytest.raises(ModelLoadError, match="needs 12 bytes but spans 8"):
        read_header(write_raw(tmp_path / "x.safetensors", header, bytes(8)))


def test_wrong_shape_named_with_both_shapes(model_copy):
    from safetensors.torch import load_file

    state = load_file(model_copy / "model.safetensors")
    state["model.norm.weight"] = torch.ones(65)
    save_file(state, model_copy / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"model\.norm\.weight has shape \[65\], config\.json implies \[64\]"):
        load_model(model_copy, "float32")


def test_missing_and_unexpected_tensors_listed(model_copy):
    from safetensors.torch import load_file

    state = load_file(model_copy / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    state["model.layers.9.extra.weight"] = torch.ones(2)
    save_file(state, model_copy / "model.safetensors")
    with pytest.raises(ModelLoadError) as e:
        load_model(model_copy, "float32")
    assert "missing tensors: model.layers.1.mlp.up_proj.weight" in str(e.value)
    assert "unexpected tensors: model.layers.9.extra.weight" in str(e.value)


def test_pickle_checkpoints_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match="pickle checkpoints"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
        ({"hidden_size": None}, "missing key 'hidden_size'"),
        ({"hidden_size": "64"}, "key 'hidden_size' has the wrong type"),
        ({"hidden_size": 65}, "hidden_size (65) is not divisible by num_attention_heads"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_scaling type 'dynamic' is not supported"),
    ],
)
def test_bad_config_named_by_key(model_copy, change, words):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg.update(change)
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError) as e:
        load_model(model_copy, "float32")
    assert words in str(e.value)


def test_config_reads_transformers_5_rope_parameters():
    cfg = ModelConfig.from_dict({
        "model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "original_max_position_embeddings": 16},
        "some_future_key": 1,
    })
    assert cfg.rope_theta == 5e5 and cfg.rope_scaling["rope_type"] == "llama3" and cfg.head_dim == 4


@pytest.mark.parametrize(
    "breakage, words",
    [
        ("truncate", "truncated"),
        ("shape", "config.json implies"),
        ("no_tokenizer", "no tokenizer.json or tokenizer.model"),
        ("big_vocab", "the embedding only"),
        ("missing_tensor", "missing tensors"),
    ],
)
def test_cli_reports_bad_folder_in_one_line(model_copy, breakage, words):
    from safetensors.torch import load_file

    f = model_copy / "model.safetensors"
    if breakage == "truncate":
        f.write_bytes(f.read_bytes()[:-64])
    elif breakage in ("shape", "missing_tensor"):
        state = load_file(f)
        if breakage == "shape":
            state["model.norm.weight"] = torch.ones(3)
        else:
            del state["lm_head.weight"]
        save_file(state, f)
    elif breakage == "no_tokenizer":
        (model_copy / "tokenizer.json").unlink()
    elif breakage == "big_vocab":
        cfg = json.loads((model_copy / "config.json").read_text())
        state = load_file(f)
        cfg["vocab_size"] = 64
        state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"][:64].contiguous()
        state["lm_head.weight"] = state["lm_head.weight"][:64].contiguous()
        save_file(state, f)
        (model_copy / "config.json").write_text(json.dumps(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "chatcli", "ask", "--model", str(model_copy), "--raw", "--max-tokens", "2", "hello"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 3, r.stderr
    assert words in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
