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
