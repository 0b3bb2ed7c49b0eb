"""Fuzz the *values* of the GGUF metadata the converter reads (issue 24): every key is replaced by a value of a random
type and size, or dropped, and the conversion must either succeed or fail with the store's load error in one line,
quickly. The header structure has its own corruption tests in test_store_gguf.py.

CHATCLI_FUZZ_EXAMPLES sets the number of cases (default small enough for `make test`); the long run is
`CHATCLI_FUZZ_EXAMPLES=100000 python -m pytest tests/test_fuzz_gguf_values.py -q`.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.errors import LoadError
from chatcli.store.convert import convert_gguf
from chatcli.store.gguf_file import GGUFFile
from tests.storefakes import make_gguf

EXAMPLES = int(os.environ.get("CHATCLI_FUZZ_EXAMPLES", "1500"))
PROGRESS = os.environ.get("CHATCLI_FUZZ_PROGRESS")  # a file the long run rewrites with its case count and slowest case
_seen = {"cases": 0, "slowest": 0.0}
SLOW_CASE_S = 20.0  # far above a tiny conversion (tens of ms); only a hang or a runaway allocation gets near it

# Every key the converter, the tokenizer builders and the config writer read, for the two bases below.
ARCH_KEYS = ("block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
             "attention.head_count_kv", "attention.key_length", "attention.layer_norm_rms_epsilon", "rope.freq_base",
             "rope.scaling.type", "rope.scaling.factor", "rope.scaling.original_context_length")
COMMON_KEYS = (
    "general.architecture", "general.license", "general.name", "general.file_type", "tokenizer.ggml.model",
    "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre",
    "tokenizer.ggml.scores", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_space_prefix", "tokenizer.chat_template",
    "gemma3.attention.sliding_window", "gemma3.attention.sliding_window_pattern",
)


@functools.cache
def base(arch: str) -> tuple[dict, dict, dict]:
    """A valid tiny model's metadata (key -> (value, type)) and F32 tensors, read back from a real GGUF."""
    import gguf

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "base.gguf"
        make_gguf(path, arch=arch)
        with GGUFFile(path) as g:
            meta = {k: (v, g.value_types[k]) for k, v in g.metadata.items()}
            tensors = {n: np.frombuffer(g.raw(t).tobytes(), np.float32).reshape(t.shape).copy() for n, t in g.tensors.items()}
    item_types = {}
    for k, (v, t) in meta.items():
        if t == gguf.GGUFValueType.ARRAY and v:
            item_types[k] = {str: 8, bool: 7, int: 5, float: 6}[type(v[0])]
    return meta, tensors, item_types


U = {0: (0, 2**8 - 1), 1: (-(2**7), 2**7 - 1), 2: (0, 2**16 - 1), 3: (-(2**15), 2**15 - 1), 4: (0, 2**32 - 1),
     5: (-(2**31), 2**31 - 1), 10: (0, 2**64 - 1), 11: (-(2**63), 2**63 - 1)}


def ints(vtype: int):
    lo, hi = U[vtype]
    edges = [v for v in (0, 1, 2, -1, 3, 16, 64, 255, 256, 2**24, 2**24 + 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, lo, hi) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def floats(vtype: int):
    width = 32 if vtype == 6 else 64
    edges = [0.0, -0.0, 1e-5, 1.0, -1.0, 1e4, 1e30, float("nan"), float("inf"), float("-inf"), 3.4e38]
    return st.one_of(st.sampled_from(edges), st.floats(width=width, allow_nan=True, allow_infinity=True))


TEXT = st.one_of(st.sampled_from(["", "llama", "qwen2", "gemma3", "gpt2", "default", "llama3", "yarn", "linear", "none",
                                  "x" * 300, "<|im_end|>", "\u2581"]), st.text(max_size=12))


def scalar():
    """(value, GGUF type) of any scalar type."""
    return st.one_of(
        st.sampled_from(list(U)).flatmap(lambda t: ints(t).map(lambda v: (v, t))),
        st.sampled_from([6, 12]).flatmap(lambda t: floats(t).map(lambda v: (v, t))),
        st.booleans().map(lambda v: (v, 7)),
        TEXT.map(lambda v: (v, 8)),
    )


def array():
    """(list, ARRAY, item type): an array of one scalar type, possibly empty."""
    item = st.one_of(
        st.sampled_from([0, 4, 5, 10, 11]).map(lambda t: (ints(t), t)),
        st.sampled_from([6, 12]).map(lambda t: (floats(t), t)),
        st.just((st.booleans(), 7)),
        st.just((TEXT, 8)),
    )
    return item.flatmap(lambda p: st.lists(p[0], max_size=8).map(lambda v: (v, 9, p[1])))


def mutation():
    """A new value for a key: dropped (None), a scalar of any type, or an array of any item type."""
    return st.one_of(st.just(None), scalar().map(lambda p: (*p, None)), array())


@st.composite
def cases(draw):
    arch = draw(st.sampled_from(["llama", "gemma3"]))
    keys = [f"{arch}.{k}" for k in ARCH_KEYS] + list(COMMON_KEYS)
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
    return arch, {k: draw(mutation()) for k in chosen}


def write(path: Path, arch: str, changes: dict) -> None:
    import gguf

    meta, tensors, item_types = base(arch)
    w = gguf.GGUFWriter(str(path), arch)
    w.kv_data[0].pop("general.architecture", None)  # written below like any other key, so it can be fuzzed too
    merged = {k: (v, t, item_types.get(k)) for k, (v, t) in meta.items()}
    for k, change in changes.items():
        if change is None:
            merged.pop(k, None)
        else:
            merged[k] = change
    for k, (v, t, sub) in merged.items():
        if t == 9:
            w.add_key_value(k, v, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType(sub if sub is not None else 8))
        else:
            w.add_key_value(k, v, gguf.GGUFValueType(t))
    for name, value in tensors.items():
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 1000,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_any_metadata_value_converts_or_is_one_load_error(case):
    arch, changes = case
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "fuzz.gguf", Path(d) / "out"
        try:
            write(src, arch, changes)
        except (ValueError, TypeError, OverflowError, struct_error()):
            return  # gguf's writer refused the value itself: nothing to convert
        out.mkdir()
        start = time.monotonic()
        try:
            info = convert_gguf(src, out, dtype="float32")
        except LoadError as e:
            message = str(e)
            assert e.exit_code == 3 and "\n" not in message and str(src) in message, message
        else:
            ctx = info["context_length"]
            assert isinstance(ctx, int) and 1 <= ctx <= 1 << 24
        took = time.monotonic() - start
        assert took < SLOW_CASE_S, changes
        _seen["cases"] += 1
        _seen["slowest"] = max(_seen["slowest"], took)
        if PROGRESS and _seen["cases"] % 500 == 0:
            Path(PROGRESS).write_text(f"{_seen['cases']} cases converted or refused, slowest {_seen['slowest']:.3f} s\n")


def struct_error():
    import struct

    return struct.error


def test_the_base_files_convert():
    # the fuzz only means something if the unmutated files are accepted
    for arch in ("llama", "gemma3"):
        with tempfile.TemporaryDirectory() as d:
            write(Path(d) / "m.gguf", arch, {})
            (Path(d) / "out").mkdir()
            info = convert_gguf(Path(d) / "m.gguf", Path(d) / "out", dtype="float32")
            assert info["context_length"] == 256 and not math.isnan(info["parameters"])
