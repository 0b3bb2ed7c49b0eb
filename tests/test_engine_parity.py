"""Our engine against Hugging Face transformers on the same tiny random weights (float32)."""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.generate import generate_step
from chatcli.engine.loader import load_model
from chatcli.engine.sampling import make_sampler
from tests.tinymodels import ARCHS

transformers = pytest.importorskip("transformers")


def reference(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


# Each architecture as loaded plain and as the local backend runs it (quant "none": fused and prepacked linears).
@pytest.fixture(params=[(a, q) for a in sorted(ARCHS) for q in (None, "none")], ids=lambda p: f"{p[0]}-{'packed' if p[1] else 'plain'}")
def pair(request, tiny_model_factory):
    arch, quant = request.param
    path = tiny_model_factory(arch)
    return arch, load_model(path, "float32", quant=quant), reference(path)


def prompt(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 300, (1, n), generator=g)


def test_logits_match_reference(pair):
    arch, ours, ref = pair
    ids = prompt()
    with torch.no_grad():
        expected = ref(ids).logits
    got = ours(ids, 0)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4, arch


def test_cached_decoding_equals_full_forward(pair):
    _, ours, ref = pair
    ids = prompt()
    full = ours(ids, 0)
    parts = [ours(ids[:, :25], 0)] + [ours(ids[:, i : i + 1], i) for i in range(25, 40)]
    assert (torch.cat(parts, 1) - full).abs().max().item() < 1e-4


def test_greedy_tokens_match_reference(pair):
    arch, ours, ref = pair
    ids = prompt(12, seed=2)
    with torch.no_grad():
        expected = ref.generate(ids, max_new_tokens=32, do_sample=False, min_new_tokens=32, eos_token_id=None, pad_token_id=0)[0, 12:].tolist()
    steps = generate_step(ours, ids[0].tolist(), sampler=make_sampler(temperature=0))
    got = [next(steps)[0] for _ in range(32)]
    assert got == expected, arch


def test_bfloat16_runs_close_to_float32(tiny_model_factory):
    path = tiny_model_factory("llama")
    ids = prompt()
    f32 = load_model(path, "float32")(ids, 0)
    bf16 = load_model(path, "bfloat16")(ids, 0)
    assert bf16.dtype == torch.float32  # logits always come back in float32
    assert torch.allclose(f32, bf16, atol=0.1 * f32.abs().max().item())


def test_chunked_prefill_then_decode_match_reference(pair):
    """100 prompt tokens in two chunks, then 20 greedy steps through the cache, on both sides: every logit within
    1e-4 and the same greedy tokens (transformers runs its own cache the same way)."""
    arch, ours, ref = pair
    ids = prompt(100, seed=3)
    got = [ours(ids[:, :60], 0), ours(ids[:, 60:], 60)]
    tokens = []
    for step in range(20):
        tokens.append(int(got[-1][0, -1].argmax()))
        got.append(ours(torch.tensor([[tokens[-1]]]), 100 + step))
    with torch.no_grad():
        first = ref(ids[:, :60], use_cache=True)
        out = ref(ids[:, 60:], cache=first.past_key_values, use_cache=True)
        expected, ref_tokens = [first.logits, out.logits], []
        for _ in range(20):
            ref_tokens.append(int(expected[-1][0, -1].argmax()))
            out = ref(torch.tensor([[ref_tokens[-1]]]), cache=out.past_key_values, use_cache=True)
            expected.append(out.logits)
    assert tokens == ref_tokens, arch
    assert (torch.cat(got, 1) - torch.cat(expected, 1)).abs().max().item() < 1e-4, arch


@pytest.mark.parametrize("arch", ["qwen3", "olmo2", "smollm3", "phi3", "phi3_window"])
def test_folders_saved_by_transformers_load_the_same(arch, tiny_model_factory, tmp_path):
    """transformers 5 writes rope_parameters (with Phi-3's partial_rotary_factor and longrope factors inside) and
    fills in no_rope_layers; a folder it saved gives the same logits as the one it read."""
    path = tiny_model_factory(arch)
    reference(path).save_pretrained(tmp_path / "saved")
    ids = prompt()
    assert (load_model(tmp_path / "saved", "float32")(ids, 0) - load_model(path, "float32")(ids, 0)).abs().max().item() < 1e-6
