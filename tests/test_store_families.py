"""GGUF import of the newer families: a tiny random HF model (tests/tinymodels.py) written out in llama.cpp's GGUF
layout with the gguf package's writer, converted back by the store, then run by our engine against transformers on
the original folder (same weights): prefill and cached decoding within 1e-4 in float32, the same greedy tokens.
Qwen3 is also checked against transformers reading the GGUF itself (its GGUF loader ignores Phi-3's partial rotary
and longrope, and has no OLMo 2 or SmolLM3)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chatcli.store.convert import convert_gguf
from tests.storefakes import CHATML, gpt2_vocab, permute

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

# HF block names -> llama.cpp's, per family (the inverse of what chatcli/store/archs.py maps)
COMMON = {"self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
          "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v"}
LLAMA = {**COMMON, "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
NAMES = {
    "qwen3": {**LLAMA, "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"},
    "olmo2": {**COMMON, "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
              "post_attention_layernorm": "post_attention_norm", "post_feedforward_layernorm": "post_ffw_norm"},
    "smollm3": LLAMA,
    "qwen3moe": {**LLAMA, "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm", "mlp.gate": "ffn_gate_inp"},
    "phi3": {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.qkv_proj": "attn_qkv",
             "self_attn.o_proj": "attn_output", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down"},
}
TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}


EXPERTS = {"gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps", "down_proj": "ffn_down_exps"}


def write_gguf(folder, path, arch: str) -> None:
    """FOLDER's weights and config as llama.cpp's convert_hf_to_gguf.py lays them out for ARCH."""
    from safetensors.numpy import load_file

    arch = {"qwen3_moe": "qwen3moe"}.get(arch, arch)
    cfg = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    tokens, types, merges = gpt2_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    w.add_chat_template(CHATML)
    tensors = {}
    if arch == "qwen3moe":  # each layer's experts stacked into one tensor per projection, [experts, rows, columns]
        w.add_expert_count(cfg["num_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        for i in range(cfg["num_hidden_layers"]):
            for proj, gg in EXPERTS.items():
                tensors[f"blk.{i}.{gg}.weight"] = np.stack(
                    [state.pop(f"model.layers.{i}.mlp.experts.{e}.{proj}.weight") for e in range(cfg["num_experts"])])
    if arch == "phi3":
        rot = int(head_dim * cfg.get("partial_rotary_factor", 1.0))
        w.add_rope_dimension_count(rot)
        w.add_uint32("phi3.rope.scaling.original_context_length", cfg["original_max_position_embeddings"])
        if cfg.get("sliding_window"):
            w.add_uint32("phi3.attention.sliding_window", cfg["sliding_window"])
        scaling = cfg["rope_scaling"]
        tensors["rope_factors_short.weight"] = np.array(scaling["short_factor"], dtype=np.float32)
        tensors["rope_factors_long.weight"] = np.array(scaling["long_factor"], dtype=np.float32)
    for name, value in state.items():
        if name in TOP:
            tensors[TOP[name]] = value
            continue
        _, _, i, rest = name.split(".", 3)
        part, kind = rest.rsplit(".", 1)
        gg = NAMES[arch][part]
        if arch == "smollm3" and gg in ("attn_q", "attn_k"):  # llama.cpp's Llama converter permutes q/k rows
            value = permute(value, heads if gg == "attn_q" else kv)
        tensors[f"blk.{i}.{gg}.{kind}"] = value
    for name, value in tensors.items():
        w.add_tensor(name, value.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(model, ids):
    """Our engine: 100 tokens in two chunks, then 20 greedy steps through the cache: (logits [1, 120, V], tokens)."""
    got = [model(ids[:, :60], 0), model(ids[:, 60:], 60)]
    tokens = []
    for step in range(20):
        tokens.append(int(got[-1][0, -1].argmax()))
        got.append(model(torch.tensor([[tokens[-1]]]), 100 + step))
    return torch.cat(got, 1), tokens


# llama.cpp's qwen3moe: every layer sparse, the chosen experts' weights renormalized. moe_intermediate_size 768 is
# transformers' default, which its GGUF reader keeps (it does not read expert_feed_forward_length).
MOE = dict(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"], num_experts=4, num_experts_per_tok=2,
           moe_intermediate_size=768, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])


@pytest.mark.parametrize("arch", ["qwen3", "qwen3_untied", "qwen3_moe", "olmo2", "smollm3", "phi3", "phi3_window"])
def test_gguf_of_a_new_family_converts_and_matches_transformers(arch, tiny_model_factory, tmp_path):
    from chatcli.engine.loader import load_model

    n_vocab = len(gpt2_vocab()[0])
    # Qwen3 with head_dim 128, which is not hidden_size / heads (16) but is what transformers' GGUF reader assumes (it
    # ignores the file's key_length).
    extra = {"head_dim": 128} if arch.startswith("qwen3") else {}
    if arch == "qwen3_moe":
        arch, extra = "qwen3", {**extra, **MOE}
    folder = tiny_model_factory(arch, vocab_size=n_vocab, bos_token_id=0, eos_token_id=2, **extra)
    model_type = json.loads((folder / "config.json").read_text())["model_type"]
    src, out = tmp_path / "m.gguf", tmp_path / "converted"
    write_gguf(folder, src, model_type)
    out.mkdir()
    convert_gguf(src, out, dtype="float32")
    assert json.loads((out / "config.json").read_text())["model_type"] == model_type

    ids = torch.randint(0, n_vocab, (1, 100), generator=torch.Generator().manual_seed(4))
    ours, tokens = run(load_model(out, "float32"), ids)
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = ref(torch.cat([ids, torch.tensor([tokens])], 1)).logits
    assert (ours - expected).abs().max().item() < 1e-4, arch
    assert expected[0, 99:119].argmax(-1).tolist() == tokens, arch
    if model_type in ("qwen3", "qwen3_moe"):  # transformers reads this GGUF too
        from tests.realmodels import reference_from_gguf

        from_gguf = reference_from_gguf(src)
        with torch.no_grad():
            assert (from_gguf(ids).logits - ours[:, :100]).abs().max().item() < 1e-4
