"""Gemma 3 against transformers' Gemma3ForCausalLM on tiny random weights (float32), and its sliding-window ring cache.

The tiny model's window is 8 and its ring 16 slots, so 40- to 100-token prompts slide many times over, and prefill
chunks shorter than, equal to and longer than the ring are all exercised.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from chatcli.engine import generate
from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import EngineError, ModelLoadError
from chatcli.engine.generate import generate_step
from chatcli.engine.loader import load_model
from chatcli.engine.models.gemma3 import Model
from chatcli.engine.sampling import make_sampler

transformers = pytest.importorskip("transformers")

WINDOW = 8


def gemma_weights(path, seed=0):
    """Rewrite PATH's weights at Gemma's scale: norm weights near 0 (the norm scales by 1 + w), a small embedding
    (it is multiplied by sqrt(hidden_size)), so the logits stay moderate and the parity bound means something."""
    state = load_file(str(path / "model.safetensors"))
    g = torch.Generator().manual_seed(seed)
    for name, t in state.items():
        if name.endswith("norm.weight"):
            state[name] = 0.2 * torch.randn(t.shape, generator=g)
        elif name.endswith("embed_tokens.weight"):
            state[name] = 0.5 * torch.randn(t.shape, generator=g)
    save_file(state, str(path / "model.safetensors"))


@pytest.fixture
def gemma(tiny_model_factory):
    """make(**config_overrides) -> (folder, our model, transformers' model), both float32."""

    def make(**overrides):
        path = tiny_model_factory("gemma3", **overrides)
        gemma_weights(path)
        ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
        return path, load_model(path, "float32"), ref

    return make


def prompt(n, seed=1):
    return torch.randint(0, 300, (1, n), generator=torch.Generator().manual_seed(seed))


def reference_logits(ref, ids):
    with torch.no_grad():
        return ref(ids).logits


def chunked(model, ids, sizes, start=0):
    """Logits of ids fed in chunks of the given sizes from position start."""
    out, pos = [], start
    for n in sizes:
        out.append(model(ids[:, pos - start : pos - start + n], pos))
        pos += n
    return torch.cat(out, 1)


def test_layout_and_tied_head(gemma):
    _, ours, ref = gemma()
    assert ours.kinds == ref.config.layer_types
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert ours.ring_size == 2 * WINDOW
    assert {k for k in ours.state_dict() if "layers.0." in k} == {k for k in ref.state_dict() if "layers.0." in k}


def test_long_prompt_logits_match_reference(gemma):
    _, ours, ref = gemma()
    ids = prompt(100)
    expected = reference_logits(ref, ids)
    assert (ours(ids, 0) - expected).abs().max().item() < 1e-4
    assert (ours(ids, 0, last_only=True) - expected[:, -1:]).abs().max().item() < 1e-4
    # Chunks shorter than the window, as long as the ring, longer than it, and single decode steps.
    got = chunked(ours, ids, [1, 5, 16, 17, 1, 1, 30, 29])
    assert (got - expected).abs().max().item() < 1e-4


def test_greedy_tokens_match_reference_with_small_prefill_chunks(gemma, monkeypatch):
    _, ours, ref = gemma()
    monkeypatch.setattr(generate, "PREFILL_CHUNK", 5)
    ids = prompt(30, seed=2)
    with torch.no_grad():
        expected = ref.generate(ids, max_new_tokens=32, do_sample=False, min_new_tokens=32, eos_token_id=None, pad_token_id=0)[0, 30:].tolist()
    steps = generate_step(ours, ids[0].tolist(), sampler=make_sampler(temperature=0))
    assert [next(steps)[0] for _ in range(32)] == expected


@pytest.mark.parametrize(
    "overrides",
    [
        # transformers 5 writes per-layer-type rope parameters and layer_types
        dict(rope_theta=None, rope_local_base_freq=None, rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 50000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 500.0}}),
        # older configs give the pattern as a number: every 2nd layer is global
        dict(layer_types=None, sliding_window_pattern=2),
        # rope scaling applies to the global layers only
        dict(rope_scaling={"rope_type": "linear", "factor": 4.0}),
        # Gemma 2-style soft-capping of attention scores and logits
        dict(attn_logit_softcapping=5.0, final_logit_softcapping=3.0),
    ],
    ids=["rope_parameters", "sliding_window_pattern", "linear_rope", "softcapping"],
)
def test_config_variants_match_reference(gemma, overrides):
    path, _, _ = gemma()
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(overrides)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    (path / "config.json").write_text(json.dumps(cfg))
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    ours = load_model(path, "float32")
    assert ours.kinds == ref.config.layer_types
    ids = prompt(40)
    expected = reference_logits(ref, ids)
    assert (ours(ids, 0) - expected).abs().max().item() < 1e-4
    assert (chunked(ours, ids, [20, 1, 1, 18]) - expected).abs().max().item() < 1e-4


def test_hub_config_without_optional_keys_gets_transformers_defaults():
    c = ModelConfig.from_dict(dict(model_type="gemma3_text", vocab_size=512, hidden_size=640, intermediate_size=2048,
                                   num_hidden_layers=12, num_attention_heads=4, num_key_value_heads=1))
    ref = transformers.Gemma3TextConfig(vocab_size=512, hidden_size=640, intermediate_size=2048, num_hidden_layers=12,
                                        num_attention_heads=4, num_key_value_heads=1)
    assert (c.tie_word_embeddings, c.head_dim, c.sliding_window, c.query_pre_attn_scalar) == (
        ref.tie_word_embeddings, ref.head_dim, ref.sliding_window, ref.query_pre_attn_scalar)
    assert (c.rope_theta, c.rope_local_base_freq) == (
        ref.rope_parameters["full_attention"]["rope_theta"], ref.rope_parameters["sliding_attention"]["rope_theta"])
    with torch.device("meta"):
        assert Model(c).kinds == ref.layer_types


@pytest.mark.parametrize("bad, key", [
    (dict(layer_types=["sliding_attention"]), "layer_types"),
    (dict(hidden_activation="swish"), "hidden_activation"),
    (dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
])
def test_bad_config_is_named(tiny_model_factory, bad, key):
    path = tiny_model_factory("gemma3")
    (path / "config.json").write_text(json.dumps({**json.loads((path / "config.json").read_text()), **bad}))
    with pytest.raises(ModelLoadError, match=key):
        load_model(path, "float32")


def test_rewind_within_the_ring_reuses_the_cache(gemma):
    _, ours, ref = gemma()
    a, b = prompt(60, seed=3), prompt(60, seed=4)
    b[:, :55] = a[:, :55]  # b shares 55 tokens with a, then diverges
    ours(a, 0)
    assert ours.max_reusable_prefix(60, 55) == 55
    got = ours(b[:, 55:], 55)
    assert (got - reference_logits(ref, b)[:, 55:]).abs().max().item() < 1e-4


def test_rewind_past_the_ring_must_prefill_whole(gemma):
    _, ours, ref = gemma()
    a = prompt(60, seed=3)
    ours(a, 0)
    # The ring holds positions 44..59; resuming at 40 would need 33..39, which were overwritten.
    assert ours.max_reusable_prefix(60, 40) == 0
    with pytest.raises(EngineError, match="max_reusable_prefix"):
        ours(a[:, 40:], 40)
    with pytest.raises(EngineError):
        ours(a[:, :1], 61)  # a gap: position 60 was never written
    # Starting over is always possible, and right.
    assert (ours(a, 0) - reference_logits(ref, a)).abs().max().item() < 1e-4


def test_smaller_rewind_margin(gemma):
    _, ours, _ = gemma()
    ours.setup_cache(256, rewind=0)
    assert ours.ring_size == WINDOW
    ours(prompt(60), 0)
    assert ours.max_reusable_prefix(60, 59) == 59  # the window before 59 is 52..58: still there
    assert ours.max_reusable_prefix(60, 58) == 0
    assert ours.max_reusable_prefix(30, 30) == 0  # the caller knows less than the model holds: trust the caller


def test_interrupted_prefill_leaves_a_usable_prefix(gemma):
    _, ours, ref = gemma()
    ids = prompt(50, seed=5)
    ours(ids[:, :30], 0)
    layer = ours.model.layers[2]  # the last local layer: the first two layers have written the new chunk already
    real_forward = layer.forward

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    layer.forward = boom
    with pytest.raises(KeyboardInterrupt):
        ours(ids[:, 30:], 30)
    layer.forward = real_forward
    keep = ours.max_reusable_prefix(30, 30)
    assert keep in (0, 30)
    got = ours(ids[:, keep:], keep)
    assert (got - reference_logits(ref, ids)[:, keep:]).abs().max().item() < 1e-4


def test_local_cache_memory_stays_at_the_window():
    """Cache bytes per layer kind for gemma-3-270m's shape at 32k context (meta tensors: nothing is allocated)."""
    cfg = ModelConfig.from_dict(dict(
        model_type="gemma3_text", vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512, max_position_embeddings=32768,
    ))
    with torch.device("meta"):
        model = Model(cfg).to(torch.bfloat16)
        model.setup_cache(32768)
    sizes = {}
    for cache, kind in zip(model.cache.layers, model.kinds):
        sizes[kind] = cache.k.numel() * cache.k.element_size() * 2
    assert model.kinds.count("sliding_attention") == 15
    assert sizes["full_attention"] == 32768 * 256 * 2 * 2  # every position: 32 MiB a layer in bf16
    assert sizes["sliding_attention"] == 1024 * 256 * 2 * 2  # window + rewind margin: 1 MiB a layer, whatever the context
