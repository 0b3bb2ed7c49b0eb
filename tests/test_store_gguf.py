"""The checked GGUF reader: a valid file reads like gguf's own GGUFReader; every corruption is a clear LoadError."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from chatcli.errors import LoadError
from chatcli.store.gguf_file import GGUFError, GGUFFile
from tests.storefakes import kv_value_pos, make_gguf, patch, tensor_offset_pos


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.gguf"
    make_gguf(path, qtype="Q8_0", extra_kv={"x.aaaa": 1, "x.bbbb": 2})
    return path


def test_reads_like_ggufreader(tiny):
    import gguf

    ref = gguf.GGUFReader(str(tiny))
    with GGUFFile(tiny) as g:
        for key, field in ref.fields.items():
            if key.startswith("GGUF."):
                continue
            value = field.contents()
            assert g.metadata[key] == pytest.approx(value) if isinstance(value, float) else g.metadata[key] == value, key
        assert list(g.tensors) == [t.name for t in ref.tensors]
        for t in ref.tensors:
            info = g.tensors[t.name]
            assert info.shape == tuple(int(d) for d in reversed(t.shape))
            assert info.offset == t.data_offset and info.ggml_type == t.tensor_type
            assert g.raw(info).tobytes() == t.data.tobytes()


def expect(path, *words):
    with pytest.raises(GGUFError) as e:
        GGUFFile(path)
    message = str(e.value)
    assert isinstance(e.value, LoadError) and e.value.exit_code == 3
    assert str(path) in message and "\n" not in message
    for w in words:
        assert w in message, message
    return message


def test_bad_magic(tiny):
    patch(tiny, 0, "4s", b"GGUX")
    expect(tiny, "bad magic")


@pytest.mark.parametrize("size", [1, 4, 8, 23])
def test_a_file_under_24_bytes_is_truncated_not_bad_magic(tiny, size):
    tiny.write_bytes(tiny.read_bytes()[:size])
    message = expect(tiny, f"truncated: {size} bytes, but a GGUF header needs at least 24")
    assert "magic" not in message


def test_bad_magic_shows_the_bytes_read(tiny):
    tiny.write_bytes(b"PK\x03\x04" + bytes(40))
    expect(tiny, "bad magic number b'PK\\x03\\x04' (expected b'GGUF')")
    tiny.write_bytes(b"XY")  # short and wrong: the wrong bytes are the news
    expect(tiny, "bad magic number b'XY'")


def test_bad_version(tiny):
    patch(tiny, 4, "I", 7)
    expect(tiny, "unsupported GGUF version 7")


def test_big_endian_is_named(tiny):
    patch(tiny, 4, ">I", 3)
    expect(tiny, "big-endian")


@pytest.mark.parametrize("count", [2**63, 2**20, 10**6])
def test_huge_metadata_count(tiny, count):
    patch(tiny, 16, "Q", count)
    expect(tiny, f"metadata count {count} is impossible")


def test_huge_tensor_count(tiny):
    patch(tiny, 8, "Q", 2**40)
    expect(tiny, "tensor count")


def test_oversized_string(tiny):
    patch(tiny, 24, "Q", 2**62)  # the first key's length
    expect(tiny, "claims", "bytes")


def test_string_past_end_of_file(tiny):
    patch(tiny, 24, "Q", tiny.stat().st_size)
    expect(tiny, "truncated")


def test_oversized_array(tiny):
    data = tiny.read_bytes()
    pos = kv_value_pos(data, "tokenizer.ggml.tokens")  # type (4) + item type (4) + count (8)
    patch(tiny, pos + 8, "Q", 2**40)
    expect(tiny, "array of", "items")


def test_unknown_value_type(tiny):
    patch(tiny, kv_value_pos(tiny.read_bytes(), "x.aaaa"), "I", 77)
    expect(tiny, "unknown value type 77")


def test_duplicate_key(tiny):
    data = tiny.read_bytes().replace(b"x.bbbb", b"x.aaaa")
    tiny.write_bytes(data)
    expect(tiny, "duplicate metadata key 'x.aaaa'")


def test_duplicate_tensor_name(tmp_path):
    path = tmp_path / "dup.gguf"
    import numpy as np

    make_gguf(path, extra_tensors={"zz.aaaa": np.zeros((4, 32), np.float32), "zz.bbbb": np.zeros((4, 32), np.float32)})
    path.write_bytes(path.read_bytes().replace(b"zz.bbbb", b"zz.aaaa"))
    expect(path, "duplicate tensor name 'zz.aaaa'")


def test_bad_alignment(tmp_path):
    path = tmp_path / "align.gguf"
    make_gguf(path, extra_kv={"general.alignment": 64})
    patch(path, kv_value_pos(path.read_bytes(), "general.alignment") + 4, "I", 48)
    expect(path, "general.alignment 48")


def test_tensor_offset_past_end_of_file(tiny):
    patch(tiny, tensor_offset_pos(tiny.read_bytes(), "output_norm.weight"), "Q", 2**50)
    expect(tiny, "output_norm.weight", "past the end of the file")


def test_misaligned_tensor_offset(tiny):
    pos = tensor_offset_pos(tiny.read_bytes(), "output_norm.weight")
    (offset,) = struct.unpack_from("<Q", tiny.read_bytes(), pos)
    patch(tiny, pos, "Q", offset + 4)
    expect(tiny, "not a multiple of the alignment")


def test_overlapping_tensors(tiny):
    data = tiny.read_bytes()
    (first,) = struct.unpack_from("<Q", data, tensor_offset_pos(data, "token_embd.weight"))
    patch(tiny, tensor_offset_pos(data, "output_norm.weight"), "Q", first)
    expect(tiny, "overlap")


def test_truncated_data_section(tiny):
    tiny.write_bytes(tiny.read_bytes()[:-100])
    expect(tiny, "truncated data section")


def test_truncated_header(tiny):
    tiny.write_bytes(tiny.read_bytes()[:3000])
    expect(tiny, "truncated")


def test_impossible_dimension(tiny):
    pos = tensor_offset_pos(tiny.read_bytes(), "output_norm.weight") - 4 - 8  # its single dimension
    patch(tiny, pos, "Q", 0)
    expect(tiny, "impossible shape")


def test_unknown_ggml_type(tiny):
    pos = tensor_offset_pos(tiny.read_bytes(), "output_norm.weight") - 4
    patch(tiny, pos, "I", 200)
    expect(tiny, "unknown GGML type 200")


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    expect(empty, "truncated: 0 bytes, but a GGUF header needs at least 24")
    with pytest.raises(GGUFError, match="cannot be read"):
        GGUFFile(tmp_path / "missing.gguf")


def test_import_of_corrupt_gguf_is_exit_3_and_leaves_nothing(tiny, _isolated_home):
    patch(tiny, 16, "Q", 2**63)
    proc = subprocess.run([sys.executable, "-m", "chatcli", "import", str(tiny), "--name", "bad"], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("chatcli: error: ") and "metadata count" in last
    assert "Traceback" not in proc.stderr
    store = _isolated_home / "models"
    assert not (store / "bad").exists() and not list(store.glob(".tmp-*"))


def test_default_conversion_stores_every_gguf_value_exactly(tmp_path):
    """--dtype exact (the default): float16 and float32 tensors as they are, block quantizations dequantized in float32,
    bit for bit what gguf dequantizes (what transformers and llama.cpp compute with); and the mixed folder loads."""
    import json

    import numpy as np
    import torch
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    from chatcli.engine.loader import load_model
    from chatcli.store.convert import convert_gguf

    hf_names = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
                "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
                "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
                "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
                "blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight",
                "blk.0.ffn_norm.weight": "model.layers.0.post_attention_layernorm.weight",
                "blk.1.ffn_down.weight": "model.layers.1.mlp.down_proj.weight"}
    types = {"token_embd.weight": "Q8_0", "output.weight": "Q4_1", "blk.0.attn_q.weight": "Q4_0",
             "blk.0.attn_k.weight": "Q4_1", "blk.0.attn_v.weight": "F16", "blk.0.ffn_up.weight": "Q5_0"}
    src, out = tmp_path / "m.gguf", tmp_path / "m"
    make_gguf(src, arch="qwen2", tied=False, tensor_types=types)  # qwen2: no q/k row permutation to undo
    out.mkdir()
    info = convert_gguf(src, out)
    got = load_file(out / "model.safetensors")
    header_len = int.from_bytes((out / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((out / "model.safetensors").read_bytes()[8 : 8 + header_len])
    with GGUFFile(src) as g:
        for gg, hf in hf_names.items():
            t = g.tensors[gg]
            expected = dequantize(g.raw(t), t.ggml_type)
            assert got[hf].dtype == (np.float16 if t.type_name == "F16" else np.float32), hf
            np.testing.assert_array_equal(got[hf].astype(np.float32), expected, err_msg=hf)
            assert header[hf]["dtype"] == ("F16" if t.type_name == "F16" else "F32")
        q41 = dequantize(g.raw(g.tensors["blk.0.attn_k.weight"]), g.tensors["blk.0.attn_k.weight"].ggml_type)
    assert (q41.astype(np.float16).astype(np.float32) != q41).any()  # float16 would have rounded: the test can fail
    assert info["dtype"] == "float16/float32"
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float32"
    model = load_model(out, "float32", max_seq_len=8)  # float16 beside float32 in one file loads
    assert torch.equal(model.model.embed_tokens.weight, torch.from_numpy(got["model.embed_tokens.weight"]))
