"""Hostile model folders (issue 24, defects 2, 3, 4 and 13): every size-bearing or typed value in config.json, the
safetensors headers and tokenizer_config.json is checked before anything is built or allocated. Each bad folder is a
load error (exit 3) that names the file and the key; the store listing shows it as broken and lists the rest."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from chatcli.engine import cpu
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.loader import check_folder, context_that_fits, load_model
from chatcli.engine.tokenizer import load_tokenizer
from tests.plugins import run_cli


def one_line(r, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


@pytest.fixture
def broken(tmp_path, tiny_llama_dir):
    """broken(name, config=..., header=..., tokenizer_config=..., weights=...) -> a changed copy of the tiny Llama."""

    def make(name: str, config=None, header=None, tokenizer_config=None, weights=None):
        folder = tmp_path / name
        shutil.copytree(tiny_llama_dir, folder)
        if config is not None:
            cfg = json.loads((folder / "config.json").read_text())
            cfg = config(cfg) if callable(config) else {**cfg, **config}
            (folder / "config.json").write_text(json.dumps(cfg))
        if header is not None:  # rewrite the first tensor's header entry; the data is left as it was
            f = folder / "model.safetensors"
            raw = f.read_bytes()
            (n,) = struct.unpack("<Q", raw[:8])
            h = json.loads(raw[8:8 + n])
            first = next(k for k in h if k != "__metadata__")
            h[first].update(header)
            hb = json.dumps(h).encode()
            f.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
        if weights is not None:
            f = folder / "model.safetensors"
            save_file(weights(load_file(f)), str(f))
        if tokenizer_config is not None:
            (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        return folder

    return make


CONFIG_CASES = [
    ({"num_hidden_layers": 10**9}, "num_hidden_layers is 1000000000"),  # hung `ask`, 25 MB/s
    ({"num_hidden_layers": 5}, "num_hidden_layers 5 but the weights hold 2 blocks"),
    ({"max_position_embeddings": 2**40}, "max_position_embeddings is 1099511627776"),  # an allocation traceback
    ({"num_key_value_heads": 0}, "num_key_value_heads is 0"),  # ZeroDivisionError
    ({"num_attention_heads": 0}, "num_attention_heads is 0"),
    ({"vocab_size": 10**12}, "vocab_size is 1000000000000"),
    ({"intermediate_size": -4}, "intermediate_size is -4"),
    ({"head_dim": 10**9}, "head_dim is 1000000000"),
    ({"hidden_act": "nope"}, "hidden_act 'nope' is not supported"),  # passed unchecked
    ({"sliding_window": -1}, "sliding_window is -1"),
    ({"rms_norm_eps": -1.0}, "rms_norm_eps is -1.0"),  # surfaced as "NaN logits", exit 1
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps is nan"),  # Python's json reads NaN
    ({"rope_theta": 0.0}, "rope_theta is 0.0"),
    ({"rope_theta": float("inf")}, "rope_theta is inf"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 0}}, "rope_scaling.factor is 0.0"),
    ({"rope_scaling": {"rope_type": "linear", "factor": "x"}}, "rope_scaling.factor must be a number"),  # a traceback
    ({"rope_scaling": {"rope_type": ["linear"]}}, "rope_type must be a string"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2, "high_freq_factor": 2,
                       "original_max_position_embeddings": 32}}, "low_freq_factor equals high_freq_factor"),
    ({"eos_token_id": 10**12}, "token id 1000000000000"),
    ({"eos_token_id": [-3]}, "token id -3"),
    ({"eos_token_id": ["x"]}, "token id 'x'"),
    (lambda c: {"model_type": "llama", "text_config": [1, 2]}, "key 'text_config' must be an object"),  # a traceback
    (lambda c: [c], "expected a JSON object"),
    ({"layer_types": [1, 2]}, "layer_types must be a list of strings"),
    ({"final_logit_softcapping": 3.4e38}, "final_logit_softcapping is 3.4e+38"),  # found by the fuzz: inf logits
]


@pytest.mark.parametrize(("change", "words"), CONFIG_CASES, ids=[w.split()[0].strip("'") for _, w in CONFIG_CASES])
def test_bad_config_values_are_named_before_anything_is_built(broken, change, words):
    folder = broken("m", config=change)
    with pytest.raises(ModelLoadError) as e:
        check_folder(folder)
    assert words in str(e.value) and str(folder) in str(e.value)


HEADER_CASES = [
    ({"dtype": ["F32"]}, "has unknown dtype ['F32']"),  # TypeError: unhashable type
    ({"shape": 5}, "malformed shape or offsets"),  # TypeError: int is not iterable
    ({"shape": [True, 2]}, "malformed shape or offsets"),
    ({"data_offsets": "0-8"}, "malformed header entry"),
]


@pytest.mark.parametrize(("entry", "words"), HEADER_CASES)
def test_bad_safetensors_header_entries(broken, entry, words):
    with pytest.raises(ModelLoadError, match=None) as e:
        check_folder(broken("m", header=entry))
    assert words in str(e.value)


def test_integer_weights_are_refused(broken):
    folder = broken("m", weights=lambda st: {**st, "model.norm.weight": st["model.norm.weight"].to(torch.int16)})
    with pytest.raises(ModelLoadError, match="model.norm.weight is stored as int16"):
        check_folder(folder)


@pytest.mark.parametrize(("tokenizer_config", "words"), [
    ([1, 2], "expected a JSON object, found list"),  # the chat template was dropped without a word
    ({"added_tokens_decoder": [1, 2]}, "'added_tokens_decoder' has the wrong type (list)"),  # AttributeError
    ({"chat_template": 5}, "'chat_template' has the wrong type (int)"),
])
def test_bad_tokenizer_config(broken, tokenizer_config, words):
    with pytest.raises(ModelLoadError) as e:
        load_tokenizer(broken("m", tokenizer_config=tokenizer_config))
    assert words in str(e.value)


def test_kv_cache_is_capped_by_free_memory(broken, monkeypatch):
    """A config claiming 16M positions loads with a cache sized to the memory there is, and says so once."""
    folder = broken("m", config={"max_position_embeddings": 1 << 24})
    monkeypatch.setattr(cpu, "available_memory", lambda: 64 << 20)
    model = load_model(folder, "float32")
    per_position = 2 * 2 * 2 * 16 * 4 + 2 * 16 * 4 * 2  # k and v of 2 layers x 2 kv heads x 16 dims, plus cos/sin
    assert model.max_seq_len == (32 << 20) // per_position < 1 << 24
    assert any("KV cache holds" in note for note in model.load_notes)
    monkeypatch.setattr(cpu, "available_memory", lambda: None)
    assert context_that_fits(model.config, torch.float32) == 1 << 24  # unknown memory: the model's own context


CLI_CASES = [  # (name, how the folder is broken, words, does `models quantize` read what is broken)
    ("layers", dict(config={"num_hidden_layers": 10**9}), "num_hidden_layers is 1000000000", True),
    ("heads", dict(config={"num_attention_heads": 0}), "num_attention_heads is 0", True),
    ("kvheads", dict(config={"num_key_value_heads": 0}), "num_key_value_heads is 0", True),
    ("textconfig", dict(config=lambda c: {"model_type": "llama", "text_config": [1]}), "'text_config' must be an object", True),
    ("eps", dict(config={"rms_norm_eps": -1.0}), "rms_norm_eps is -1.0", True),
    ("rope", dict(config={"rope_theta": 0.0}), "rope_theta is 0.0", True),
    ("window", dict(config={"sliding_window": -1}), "sliding_window is -1", True),
    ("act", dict(config={"hidden_act": "nope"}), "hidden_act 'nope'", True),
    ("listdtype", dict(header={"dtype": ["F32"]}), "unknown dtype ['F32']", True),
    ("numshape", dict(header={"shape": 5}), "malformed shape", True),
    ("i16", dict(weights=lambda st: {**st, "model.norm.weight": st["model.norm.weight"].to(torch.int16)}), "stored as int16", True),
    ("tokarray", dict(tokenizer_config=[1]), "expected a JSON object, found list", False),
    ("addedlist", dict(tokenizer_config={"added_tokens_decoder": [1]}), "'added_tokens_decoder' has the wrong type", False),
]


@pytest.mark.parametrize(("name", "kwargs", "words", "quantize"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_ask_import_and_quantize_exit_3_in_one_line(broken, tmp_path, name, kwargs, words, quantize):
    folder = broken(name, **kwargs)
    line = one_line(run_cli("ask", "--model", str(folder), "--raw", "--max-tokens", "2", "hi", timeout=60), 3)
    assert words in line
    store = tmp_path / "store"
    store.mkdir()
    line = one_line(run_cli("--models-dir", str(store), "import", "-q", str(folder), timeout=60), 3)
    assert words in line and [p.name for p in store.iterdir() if not p.name.startswith(".")] == []  # nothing half-written
    if quantize:
        shutil.copytree(folder, store / name)
        line = one_line(run_cli("--models-dir", str(store), "models", "quantize", name, "int8", timeout=60), 3)
        assert words in line and not (store / name / "quantized").exists()


def test_a_failed_load_saves_no_conversation(broken):
    one_line(run_cli("ask", "--model", str(broken("m", config={"num_attention_heads": 0})), "hi", timeout=60), 3)
    r = run_cli("history", "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout or "[]") == [], r.stdout


def test_one_broken_folder_does_not_break_the_listing(broken, tmp_path, tiny_llama_dir):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(tiny_llama_dir, store / "good")
    for name, kwargs in {
        "arch5": dict(config={"architectures": 5}),
        "listdtype": dict(header={"dtype": ["F32"]}),
        "numshape": dict(header={"shape": 5}),
        "kv0": dict(config={"num_key_value_heads": 0}),
        "tokarray": dict(tokenizer_config=[1]),
    }.items():
        shutil.move(broken(name, **kwargs), store / name)
    (store / "arrayheader").mkdir()
    shutil.copy(tiny_llama_dir / "config.json", store / "arrayheader")
    (store / "arrayheader" / "model.safetensors").write_bytes(struct.pack("<Q", 7) + b"[1,2,3]")
    r = run_cli("--models-dir", str(store), "models", "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert set(rows) == {"good", "arch5", "listdtype", "numshape", "kv0", "tokarray", "arrayheader"}
    assert rows["good"]["problem"] == "" and rows["arch5"]["architecture"] == "llama"
    assert "unknown dtype" in rows["listdtype"]["problem"]
    assert "malformed shape" in rows["numshape"]["problem"]
    assert "num_key_value_heads is 0" in rows["kv0"]["problem"]
    assert "tokenizer_config.json: expected a JSON object, found list" in rows["tokarray"]["problem"]
    assert "header is not a JSON object" in rows["arrayheader"]["problem"]
    for name in rows:
        r = run_cli("--models-dir", str(store), "models", "show", name, "--json") if name in ("listdtype", "arrayheader") else None
        if r is not None:
            assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
