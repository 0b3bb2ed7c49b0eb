"""engine/rope.py against transformers' own RoPE initialisation (modeling_rope_utils) on the same parameters: the
inverse frequencies within float32 rounding and the same attention factor, for every scaling chatcli reads."""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.rope import inv_frequencies

transformers = pytest.importorskip("transformers")

CASES = {
    "default": ({"rope_type": "default"}, 1.0),
    "linear": ({"rope_type": "linear", "factor": 4.0}, 1.0),
    "llama3": ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}, 1.0),
    "yarn": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, 1.0),  # Qwen3's long context
    "yarn-untruncated": ({"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32,
                          "beta_slow": 1, "truncate": False}, 1.0),
    "yarn-mscale": ({"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "mscale": 1.0,
                     "mscale_all_dim": 0.707}, 1.0),  # DeepSeek's attention factor from two mscales
    "yarn-given-factor": ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 2048,
                           "attention_factor": 1.25}, 1.0),
    # transformers' default function ignores partial_rotary_factor; its linear one at factor 1 honours it
    "partial-rotary": ({"rope_type": "linear", "factor": 1.0}, 0.5),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("theta", [10_000.0, 1_000_000.0])
def test_inverse_frequencies_match_transformers(name, theta):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params, partial = CASES[name]
    head_dim, context = 128, 131072
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, max_position_embeddings=context,
                         partial_rotary_factor=partial, rope_parameters={**params, "rope_theta": theta})
    if params["rope_type"] == "default":  # transformers keeps the plain one on the model's rotary class
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        ref, ref_scale = LlamaRotaryEmbedding.compute_default_rope_parameters(config=config, device="cpu")
    else:
        ref, ref_scale = ROPE_INIT_FUNCTIONS[params["rope_type"]](config, "cpu")
    ours, scale = inv_frequencies(head_dim, theta, params, rotary_dim=int(head_dim * partial))
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref.float(), rtol=1e-6, atol=0)
    assert scale == pytest.approx(ref_scale, rel=1e-12)


@pytest.mark.parametrize("seq_len", [1024, 8192])  # within Phi-3's original 4096 positions (short factors) and past it (long)
@pytest.mark.parametrize("partial", [1.0, 0.75])  # Phi-3.5-mini rotates whole heads, Phi-4-mini three quarters of each
def test_longrope_matches_transformers(seq_len, partial):
    from transformers import Phi3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    head_dim, context, old_ctx = 96, 131072, 4096
    n = int(head_dim * partial) // 2
    g = torch.Generator().manual_seed(0)
    short, long = (1.0 + torch.rand(n, generator=g)).tolist(), (1.0 + 30 * torch.rand(n, generator=g)).tolist()
    params = {"rope_type": "longrope", "short_factor": short, "long_factor": long, "rope_theta": 10000.0,
              "partial_rotary_factor": partial}
    config = Phi3Config(hidden_size=head_dim * 4, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=context,
                        original_max_position_embeddings=old_ctx, rope_parameters=dict(params))
    ref, ref_scale = ROPE_INIT_FUNCTIONS["longrope"](config, "cpu", seq_len=seq_len)
    # factor and the original context as the phi3 family passes them (config.json keeps them outside rope_scaling)
    ours, scale = inv_frequencies(head_dim, 10000.0, {**params, "factor": context / old_ctx, "original_max_position_embeddings": old_ctx},
                                  rotary_dim=int(head_dim * partial), seq_len=seq_len)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-6, atol=0)
    assert scale == pytest.approx(ref_scale, rel=1e-12)


@pytest.mark.parametrize("rotary_dim", [32, 24])  # whole heads, and Phi-4-mini's three quarters of each
def test_fast_rotate_matches_transformers_apply_rotary(rotary_dim):
    """rope.rotate (the decode paths' three-op rotation, partial rotary passing the rest through) against
    transformers' apply_rotary_pos_emb on the same tables."""
    from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb

    from chatcli.engine.rope import rope_tables, rotate, split_tables

    T, H, D = 7, 3, 32
    x = torch.randn(1, T, H, D, generator=torch.Generator().manual_seed(0))
    cos, sin = rope_tables(T, D, 10_000.0, rotary_dim=rotary_dim)
    ours = rotate(x, split_tables(cos, sin, torch.float32)).transpose(1, 2)
    ref, _ = apply_rotary_pos_emb(x.transpose(1, 2), x.transpose(1, 2), cos[None], sin[None])
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
