"""Per-architecture knowledge for GGUF -> Hugging Face: config.json keys, tensor names, and the layout llama.cpp changed.

Supported: llama (also SmolLM2, Mistral), qwen2, gemma3. Adding one is a config function and a name table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chatcli.store.gguf_file import GGUFError, GGUFFile

Transform = Callable[[np.ndarray], np.ndarray]

TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
LLAMA_BLOCK = {**BLOCK_NAMES, "ffn_norm": "post_attention_layernorm"}
GEMMA3_BLOCK = {
    **BLOCK_NAMES,
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$")


@dataclass
class Plan:
    """What conversion writes: config.json and, per GGUF tensor, its HF name and a fix-up of its values."""

    config: dict[str, Any]
    names: dict[str, str] = field(default_factory=dict)
    transforms: dict[str, Transform] = field(default_factory=dict)


def f32(value: Any) -> float:
    """A GGUF float32 as the short decimal it was written from (9.99999974e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


def _int(g: GGUFFile, key: str, default: int | None = None) -> int:
    value = g.get(key, default)
    if isinstance(value, list):
        raise GGUFError(f"{g.path}: {key} varies per layer ({value[:4]}...), which this converter does not support")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise GGUFError(f"{g.path}: metadata {key} is missing or not a positive integer ({value!r})")
    return value


def _unpermute(n_head: int) -> Transform:
    """Undo llama.cpp's q/k row permutation (it interleaves the two rotary halves of each head)."""

    def fix(w: np.ndarray) -> np.ndarray:
        rows = w.shape[0]
        # [n_head, 2 interleaved, head_dim/2, ...] <- [n_head, head_dim/2, 2, ...] as llama.cpp stored it
        return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    return fix


def _minus_one(w: np.ndarray) -> np.ndarray:
    # Gemma's RMSNorm scales by (1 + weight); llama.cpp stores the 1 folded in, HF checkpoints do not.
    return w - np.float32(1.0)


def _common(g: GGUFFile, arch: str) -> dict[str, Any]:
    p = arch + "."
    embd = g.tensors.get("token_embd.weight")
    if embd is None:
        raise GGUFError(f"{g.path}: no token_embd.weight tensor; not a language model GGUF")
    n_head = _int(g, p + "attention.head_count")
    hidden = _int(g, p + "embedding_length")
    cfg: dict[str, Any] = {
        "vocab_size": int(embd.shape[0]),
        "hidden_size": hidden,
        "intermediate_size": _int(g, p + "feed_forward_length"),
        "num_hidden_layers": _int(g, p + "block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": _int(g, p + "attention.head_count_kv", n_head),
        "head_dim": _int(g, p + "attention.key_length", hidden // n_head),
        "max_position_embeddings": _int(g, p + "context_length", 2048),
        "rms_norm_eps": f32(g.get(p + "attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": f32(g.get(p + "rope.freq_base", 10000.0)),
        "rope_scaling": _rope_scaling(g, p),
        "tie_word_embeddings": "output.weight" not in g.tensors,
    }
    for key, meta in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("pad_token_id", "padding_token_id")):
        value = g.get("tokenizer.ggml." + meta)
        if isinstance(value, int):
            cfg[key] = value
    return cfg


def _rope_scaling(g: GGUFFile, p: str) -> dict[str, Any] | None:
    kind = g.get(p + "rope.scaling.type")
    factor = g.get(p + "rope.scaling.factor")
    if kind in (None, "none") or not factor:
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": f32(factor)}
    if kind == "yarn":
        out = {"rope_type": "yarn", "factor": f32(factor)}
        orig = g.get(p + "rope.scaling.original_context_length")
        if isinstance(orig, int):
            out["original_max_position_embeddings"] = orig
        return out
    raise GGUFError(f"{g.path}: rope scaling {kind!r} is not supported (linear and yarn are)")


def _llama3_factors(theta: float, head_dim: int, factor: float, low: float, high: float, old_ctx: int) -> np.ndarray:
    """The per-frequency divisors Llama 3.1's rope scaling applies (what llama.cpp stores as rope_freqs)."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, mid))


def _llama3_rope(g: GGUFFile, cfg: dict[str, Any]) -> dict[str, Any]:
    """Recover Llama 3.1's rope_scaling from the rope_freqs tensor (the GGUF keeps only the resulting divisors)."""
    from gguf.quants import dequantize

    info = g.tensors["rope_freqs.weight"]
    stored = dequantize(g.raw(info), info.ggml_type).reshape(-1).astype(np.float64)
    factor = float(stored.max())
    # Every Llama 3.x release uses low 1, high 4 and an 8192-token original context; a few others are tried too.
    for old_ctx in (8192, 4096, 2048, 16384, 32768, 131072):
        for low, high in ((1.0, 4.0), (1.0, 2.0), (1.0, 8.0), (2.0, 4.0)):
            expected = _llama3_factors(cfg["rope_theta"], cfg["head_dim"], factor, low, high, old_ctx)
            if expected.shape == stored.shape and np.allclose(expected, stored, rtol=1e-4, atol=1e-4):
                return {"rope_type": "llama3", "factor": f32(factor), "low_freq_factor": low, "high_freq_factor": high,
                        "original_max_position_embeddings": old_ctx}
    raise GGUFError(f"{g.path}: rope_freqs does not match Llama 3's rope scaling for any known setting; import the HF folder instead")


def _map_names(g: GGUFFile, block: dict[str, str], skip: tuple[str, ...] = ()) -> dict[str, str]:
    names: dict[str, str] = {}
    unknown = []
    for name in g.tensors:
        if name in TOP_NAMES:
            names[name] = TOP_NAMES[name]
        elif (m := BLOCK_RE.match(name)) and m.group(2) in block:
            names[name] = f"model.layers.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}"
        elif name not in skip:
            unknown.append(name)
    if unknown:
        raise GGUFError(
            f"{g.path}: tensors this converter does not know for {g.get('general.architecture')!r}: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
        )
    return names


def llama(g: GGUFFile, arch: str = "llama") -> Plan:
    """Llama, SmolLM2, Mistral (llama.cpp writes them all as 'llama'); q/k rows come back un-permuted."""
    cfg = _common(g, arch)
    if "rope_freqs.weight" in g.tensors:
        cfg["rope_scaling"] = _llama3_rope(g, cfg)
    # Llama's attention_bias puts a bias on q, k, v and o alike.
    cfg.update(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", mlp_bias=False,
        attention_bias=any(n.endswith("attn_output.bias") for n in g.tensors),
    )
    plan = Plan(cfg, _map_names(g, LLAMA_BLOCK, skip=("rope_freqs.weight",)))
    for name in plan.names:
        if ".attn_q." in name:
            plan.transforms[name] = _unpermute(cfg["num_attention_heads"])
        elif ".attn_k." in name:
            plan.transforms[name] = _unpermute(cfg["num_key_value_heads"])
    return plan


def qwen2(g: GGUFFile) -> Plan:
    """Qwen2 and Qwen2.5: llama-like with q/k/v biases and no permutation."""
    cfg = _common(g, "qwen2")
    cfg.update(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", attention_bias=False,  # q/k/v biases are implied
        use_sliding_window=False, sliding_window=None, max_window_layers=cfg["num_hidden_layers"],
    )
    return Plan(cfg, _map_names(g, LLAMA_BLOCK))


def gemma3(g: GGUFFile) -> Plan:
    """Gemma 3 text: sandwich norms, q/k norms, interleaved sliding-window layers; norm weights lose llama.cpp's +1."""
    cfg = _common(g, "gemma3")
    n = cfg["num_hidden_layers"]
    pattern = g.get("gemma3.attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) == n:
        sliding = [bool(x) for x in pattern]
    else:
        sliding = [(i + 1) % 6 != 0 for i in range(n)]  # llama.cpp's fixed Gemma 3 pattern: every 6th layer is global
    cfg.update(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=cfg["head_dim"], sliding_window=_int(g, "gemma3.attention.sliding_window", 512),
        layer_types=["sliding_attention" if s else "full_attention" for s in sliding],
        rope_local_base_freq=10000.0,  # llama.cpp hard-codes the local rope base for Gemma 3 too
        final_logit_softcapping=None, attn_logit_softcapping=None, attention_bias=False,
    )
    plan = Plan(cfg, _map_names(g, GEMMA3_BLOCK))
    plan.transforms = {name: _minus_one for name in plan.names if name.endswith("norm.weight")}
    return plan


ARCHS: dict[str, Callable[[GGUFFile], Plan]] = {"llama": llama, "qwen2": qwen2, "gemma3": gemma3}


def plan_for(g: GGUFFile) -> Plan:
    """The conversion plan for G's general.architecture, or a clear error naming the supported ones."""
    arch = g.get("general.architecture")
    if arch not in ARCHS:
        raise GGUFError(
            f"{g.path}: architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHS))})"
        )
    return ARCHS[arch](g)
