"""Fuzz the *values* of config.json (issue 24): each key the config class, the families and the loader read is dropped
or replaced by a value of a random type and magnitude, and loading must either succeed (and give finite logits) or
raise the engine's load error (exit 3), quickly and in bounded memory. GGUF metadata has its own fuzz test.

CHATCLI_FUZZ_EXAMPLES sets the number of cases; the long run is
`CHATCLI_FUZZ_EXAMPLES=100000 python -m pytest tests/test_fuzz_config_values.py -q -o timeout=0`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chatcli.engine.errors import ModelLoadError
from chatcli.engine.loader import load_model

EXAMPLES = int(os.environ.get("CHATCLI_FUZZ_EXAMPLES", "400"))
SLOW_CASE_S = 20.0  # a tiny model loads in tens of ms; only a hang or a runaway allocation gets near this
PEAK_RSS = 2 << 30  # the acceptance's bound per case; ru_maxrss is the process's peak, so this bounds every case

KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
    "tie_word_embeddings", "attention_bias", "mlp_bias", "hidden_act", "sliding_window", "bos_token_id", "eos_token_id",
    "query_pre_attn_scalar", "rope_local_base_freq", "layer_types", "sliding_window_pattern", "hidden_activation",
    "final_logit_softcapping", "attn_logit_softcapping", "rope_parameters", "text_config", "architectures",
    "use_sliding_window",
)
ROPE_KEYS = ("rope_type", "type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings", "rope_theta")

edge_ints = st.sampled_from([0, 1, 2, 3, 4, 8, 16, 64, -1, -(2**31), 2**24, 2**24 + 1, 2**31 - 1, 2**32 - 1, 2**63, 10**30])
edge_floats = st.sampled_from([0.0, -0.0, 1e-300, 1e-6, 0.5, 1.0, 1.5, -1.0, 1e4, 1e300, float("nan"), float("inf"), float("-inf")])
scalars = st.one_of(
    st.none(), st.booleans(), edge_ints, st.integers(-(2**70), 2**70), edge_floats, st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["llama", "qwen2", "mistral", "gemma3_text", "silu", "gelu_pytorch_tanh",
                                           "linear", "llama3", "default", "sliding_attention", "full_attention"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.sampled_from(ROPE_KEYS), inner, max_size=4)),
                      max_leaves=8)
changes = st.dictionaries(st.sampled_from(KEYS), st.one_of(values, st.just("<drop>")), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def bases(tmp_path_factory, tiny_tokenizer_dir):
    from tests.tinymodels import make_tiny_model

    root = tmp_path_factory.mktemp("fuzzbase")
    return [make_tiny_model(root / arch, arch, tokenizer_dir=tiny_tokenizer_dir) for arch in ("llama", "gemma3")]


@pytest.fixture(scope="module")
def peak_bound() -> int:
    """PEAK_RSS, or, in a process that has already peaked above it (a pytest-xdist worker that ran the real models
    first), that peak plus PEAK_RSS: ru_maxrss never falls, so only growth past the old peak can be seen."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return PEAK_RSS if before < PEAK_RSS else before + PEAK_RSS


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(which=st.integers(0, 1), change=changes)
def test_config_values_load_or_fail_cleanly(bases, peak_bound, tmp_path, which, change):
    folder = tmp_path / "m"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(bases[which], folder)
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in change.items():
        if value == "<drop>":
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    start = time.monotonic()
    try:
        model = load_model(folder, "float32", max_seq_len=16)
    except ModelLoadError as e:
        assert "\n" not in str(e) and str(e)
        event("refused")
        return
    finally:
        assert time.monotonic() - start < SLOW_CASE_S, change
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]]))
    event("loaded")
    assert torch.isfinite(logits).all(), change  # a value the checks let through must not give NaN logits later
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 < peak_bound
