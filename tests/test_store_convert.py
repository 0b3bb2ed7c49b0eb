"""GGUF -> HF folder on tiny GGUFs written in the test: exact weight round trips, tokenizers, and every refusal."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from chatcli.errors import LoadError, StoreError, UsageError
from chatcli.store import st_write
from chatcli.store.convert import convert_gguf
from chatcli.store.importer import import_path
from tests.storefakes import CHATML, make_gguf


def convert(tmp_path, name="m", dtype="float32", **kw):
    src = tmp_path / f"{name}.gguf"
    hf = make_gguf(src, **kw)
    out = tmp_path / name
    out.mkdir()
    info = convert_gguf(src, out, dtype=dtype)
    return hf, out, info


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_weights_round_trip_exactly(tmp_path, arch):
    hf, out, info = convert(tmp_path, arch=arch, tied=arch != "qwen2")
    got = load_file(out / "model.safetensors")
    # llama's q/k rows come back un-permuted, Gemma's norms lose llama.cpp's +1, names are HF's
    assert set(got) == set(hf)
    for name, value in hf.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6, err_msg=name)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is (arch != "qwen2")
    assert cfg["num_key_value_heads"] == 2 and cfg["head_dim"] == 16 and cfg["torch_dtype"] == "float32"
    assert info["parameters"] == sum(v.size for v in hf.values())


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "F16"])
def test_quantized_tensors_dequantize_in_chunks(tmp_path, qtype, monkeypatch):
    import gguf
    from gguf.quants import dequantize, quantize

    monkeypatch.setattr("chatcli.store.convert.CHUNK_ELEMENTS", 100)  # forces many row chunks
    hf, out, _ = convert(tmp_path, qtype=qtype, arch="qwen2")
    got = load_file(out / "model.safetensors")
    qt = gguf.GGMLQuantizationType[qtype]
    emb = hf["model.embed_tokens.weight"]
    expected = emb.astype(np.float16).astype(np.float32) if qtype == "F16" else dequantize(quantize(emb, qt), qt)
    np.testing.assert_array_equal(got["model.embed_tokens.weight"], expected)
    assert np.abs(got["model.embed_tokens.weight"] - emb).max() < 0.05  # and close to the original


def test_bfloat16_rounds_like_torch():
    import torch

    x = np.array([1.0, -2.5, 3.14159265, 1e-30, 65504.0, 1.0039062, 1.0117188, np.inf, -np.inf], np.float32)
    x = np.concatenate([x, np.random.default_rng(0).standard_normal(1000).astype(np.float32)])
    ours = np.frombuffer(st_write.to_bytes(x, "bfloat16"), dtype="<u2")
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, ref)
    nan = np.frombuffer(st_write.to_bytes(np.array([np.nan], np.float32), "bfloat16"), dtype="<u2")
    assert nan[0] & 0x7F80 == 0x7F80 and nan[0] & 0x7F


def test_bfloat16_on_request(tmp_path):
    _, out, info = convert(tmp_path, dtype="bfloat16")
    header_len = int.from_bytes((out / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((out / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    assert info["dtype"] == "bfloat16"


def test_bpe_tokenizer_and_configs(tmp_path):
    from tokenizers import Tokenizer

    _, out, _ = convert(tmp_path)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = tok.encode("the hello<|im_end|> the", add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == "the hello<|im_end|> the"
    assert tok.token_to_id("<|im_end|>") in ids  # control tokens stay whole
    assert tok.token_to_id("Ġthe") in ids  # merges apply
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == CHATML and cfg["bos_token"] == "<|im_start|>" and cfg["eos_token"] == "<|im_end|>"
    assert cfg["add_bos_token"] is False and cfg["added_tokens_decoder"]["2"]["special"] is True
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [2, 0]  # <|im_end|>, then <|endoftext|> which also ends a turn
    assert (out / "LICENSE").read_text().startswith("License: apache-2.0")


def test_sentencepiece_tokenizer(tmp_path):
    import sentencepiece as spm

    _, out, _ = convert(tmp_path, arch="gemma3")
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert sp.GetPieceSize() == 280 and sp.unk_id() == 3 and sp.bos_id() == 2 and sp.eos_id() == 1
    assert sp.EncodeAsPieces("the cat") == ["the", "▁cat"]  # no dummy prefix, as the GGUF says
    assert "▁▁" in sp.EncodeAsPieces("a  b")  # the user-defined double space, respelled
    text = "é 😀"  # not in the vocabulary: byte fallback
    assert sp.DecodeIds(sp.EncodeAsIds(text)) == text
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "GemmaTokenizer" and cfg["add_bos_token"] is True and "chat_template" not in cfg


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_converted_tiny_models_load_in_transformers_and_our_engine(tmp_path, arch):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from chatcli.engine.loader import load_model
    from chatcli.engine.tokenizer import load_tokenizer

    _, out, _ = convert(tmp_path, arch=arch, tied=arch != "qwen2")
    ref = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ours_tok = load_tokenizer(out)
    text = "the cat hello"
    assert ours_tok.encode(text) == tok.encode(text, add_special_tokens=False)
    ids = torch.tensor([ours_tok.encode(text, add_special_tokens=True)])
    ours = load_model(out, "float32")
    with torch.no_grad():
        assert (ours(ids, 0) - ref(ids).logits).abs().max().item() < 1e-4


def test_unsupported_architecture(tmp_path):
    with pytest.raises(LoadError, match=r"architecture 'mamba' is not supported \(supported: gemma3, llama, olmo2, phi3, qwen2, qwen3"):
        convert(tmp_path, arch="mamba")


def test_unsupported_quantization_type_is_named(tmp_path):
    raw = np.zeros((32, 64 // 32 * 18), np.uint8)  # IQ4_NL: 18-byte blocks of 32 values, in attn_v's real shape
    with pytest.raises(LoadError, match="tensor blk.0.attn_v.weight uses quantization IQ4_NL"):
        convert(tmp_path, extra_tensors={"blk.0.attn_v.weight": raw}, tensor_types={"blk.0.attn_v.weight": "IQ4_NL"})


def test_unknown_tensor_is_named(tmp_path):
    with pytest.raises(LoadError, match="tensors this converter does not know for 'llama': blk.0.mystery.weight"):
        convert(tmp_path, extra_tensors={"blk.0.mystery.weight": np.zeros((2, 32), np.float32)})


def test_unsupported_pre_tokenizer(tmp_path):
    src = tmp_path / "x.gguf"
    make_gguf(src)
    src.write_bytes(src.read_bytes().replace(b"\x07\x00\x00\x00\x00\x00\x00\x00default", b"\x07\x00\x00\x00\x00\x00\x00\x00unknown"))
    (tmp_path / "x").mkdir()
    with pytest.raises(LoadError, match="pre-tokenizer 'unknown'"):
        convert_gguf(src, tmp_path / "x")


def test_bad_dtype_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="dtype 'int8'"):
        convert(tmp_path, dtype="int8")


def test_full_disk_during_conversion_leaves_nothing(tmp_path, _isolated_home, monkeypatch):
    # Simulated with a patched write (no tmpfs can be mounted here): the disk "fills" after 200 kB of weights.
    src = tmp_path / "m.gguf"
    make_gguf(src)
    written = {"n": 0}
    real = st_write._write

    def filling(f, data):
        written["n"] += len(data)
        if written["n"] > 200_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, data)

    monkeypatch.setattr(st_write, "_write", filling)
    with pytest.raises(StoreError, match="no space left on the device") as e:
        import_path(src, name="m", dtype="float32")
    assert "--models-dir" in str(e.value)
    store = _isolated_home / "models"
    assert not (store / "m").exists()
    assert not list(store.glob(".tmp-*"))


def test_llama3_rope_scaling_is_recovered_from_rope_freqs(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from chatcli.engine.loader import load_model
    from chatcli.store.archs import _llama3_factors

    freqs = _llama3_factors(10000.0, 16, 8.0, 1.0, 4.0, 8192).astype(np.float32)
    assert freqs[0] == 1.0 and 1.0 < freqs[6] < 8.0 and freqs[7] == 8.0  # the tiny head has frequencies in all three bands
    _, out, _ = convert(tmp_path, extra_tensors={"rope_freqs.weight": freqs})
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8192}
    assert "rope_freqs.weight" not in load_file(out / "model.safetensors")
    ids = torch.tensor([[5, 70, 80, 90, 100, 7]])
    ref = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (load_model(out, "float32")(ids, 0) - ref(ids).logits).abs().max().item() < 1e-4


def test_unrecognised_rope_freqs_is_refused(tmp_path):
    with pytest.raises(LoadError, match="rope_freqs does not match"):
        convert(tmp_path, extra_tensors={"rope_freqs.weight": np.linspace(1, 3, 8).astype(np.float32)})


def test_a_merge_outside_the_vocabulary_is_a_load_error(tmp_path):
    # found by tests/test_fuzz_gguf_values.py: tokenizers raised a bare Exception for it
    from tests.test_fuzz_gguf_values import write

    src = tmp_path / "m.gguf"
    write(src, "llama", {"tokenizer.ggml.merges": (["0 0"], 9, 8)})
    (tmp_path / "m").mkdir()
    with pytest.raises(LoadError, match="merge #0 '0 0' uses '00', which is not in the vocabulary"):
        convert_gguf(src, tmp_path / "m")
