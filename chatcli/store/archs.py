"""Per-architecture knowledge for GGUF -> Hugging Face: config.json keys, tensor names, and the layout llama.cpp changed.

Supported: llama (also SmolLM2, Mistral), qwen2, gemma3, qwen3, qwen3moe, olmo2, smollm3, phi3. Adding one is a config
function and a name table.
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
QWEN3_BLOCK = {**LLAMA_BLOCK, "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
OLMO2_BLOCK = {
    **{k: v for k, v in BLOCK_NAMES.items() if k != "attn_norm"},
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# llama.cpp keeps Phi-3's fused projections: attn_qkv, and ffn_up holding gate then up.
PHI3_BLOCK = {"attn_norm": "input_layernorm", "attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj",
              "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj", "ffn_norm": "post_attention_layernorm"}
QWEN3MOE_BLOCK = {**{k: v for k, v in QWEN3_BLOCK.items() if not k.startswith("ffn_") or k == "ffn_norm"},
                  "ffn_gate_inp": "mlp.gate"}
# llama.cpp stacks a layer's experts into one tensor per projection, [experts, rows, columns]; HF keeps one per expert.
EXPERT_PARTS = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}
BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$")


@dataclass
class Plan:
    """What conversion writes: config.json and, per GGUF tensor, its HF name and a fix-up of its values."""

    config: dict[str, Any]
    names: dict[str, str] = field(default_factory=dict)
    transforms: dict[str, Transform] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)  # a GGUF tensor -> the HF name of each slice of axis 0


def f32(value: Any) -> float:
    """A GGUF float32 as the short decimal it was written from (9.99999974e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


MAX_CONTEXT = 1 << 24  # far past any released model; a bigger claim would only size an allocation
MAX_SIZE = 1 << 20  # bound for a dimension before it is compared with the tensors


def _int(g: GGUFFile, key: str, default: int | None = None, hi: int = MAX_SIZE) -> int:
    value = g.get(key, default)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        raise GGUFError(f"{g.path}: {key} varies per layer ({value[:4]}...), which this converter does not support")
    return g.meta_int(key, 1, hi, *(() if default is None else (default,)))


def _check_shapes(g: GGUFFile, cfg: dict[str, Any], block: dict[str, str], shapes: dict[str, tuple[int, ...]] | None = None) -> None:
    """Hold the sizes the metadata claims against the tensors present, so no claim sizes an allocation unchecked."""
    n = cfg["num_hidden_layers"]
    layers = {int(m.group(1)) for name in g.tensors if (m := BLOCK_RE.match(name))}
    if layers != set(range(n)):
        raise GGUFError(
            f"{g.path}: metadata block_count is {n} but the file has tensors for {len(layers)} blocks "
            f"({', '.join(f'blk.{i}' for i in sorted(layers)[:4])}{' ...' if len(layers) > 4 else ''}); the GGUF is malformed"
        )
    h, d, ffn = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        raise GGUFError(f"{g.path}: attention.head_count {cfg['num_attention_heads']} is not a multiple of "
                        f"head_count_kv {cfg['num_key_value_heads']}")
    if d % 2:
        raise GGUFError(f"{g.path}: head size {d} is odd; rotary embeddings need an even one")
    want = {"token_embd.weight": (cfg["vocab_size"], h), "output_norm.weight": (h,), "output.weight": (cfg["vocab_size"], h)}
    per_layer = {
        "attn_norm": (h,), "ffn_norm": (h,), "post_attention_norm": (h,), "post_ffw_norm": (h,),
        "attn_q_norm": (d,), "attn_k_norm": (d,), "attn_q": (q, h), "attn_k": (kv, h), "attn_v": (kv, h),
        "attn_output": (h, q), "ffn_gate": (ffn, h), "ffn_up": (ffn, h), "ffn_down": (h, ffn),
        "attn_qkv": (q + 2 * kv, h), **(shapes or {}),
    }
    for i in range(n):
        for part in block:
            name = f"blk.{i}.{part}.weight"
            if name not in g.tensors:
                raise GGUFError(f"{g.path}: tensor {name} is missing; the GGUF is incomplete")
            want[name] = per_layer[part]
            bias = f"blk.{i}.{part}.bias"
            if bias in g.tensors:
                want[bias] = per_layer[part][:1]
    for name, shape in want.items():
        info = g.tensors.get(name)
        if info is not None and info.shape != shape:
            raise GGUFError(
                f"{g.path}: tensor {name} has shape {list(info.shape)} but the metadata (embedding_length {h}, "
                f"head_count {cfg['num_attention_heads']}, head_count_kv {cfg['num_key_value_heads']}, head size {d}, "
                f"feed_forward_length {ffn}) implies {list(shape)}; the GGUF is malformed"
            )


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
        "max_position_embeddings": _int(g, p + "context_length", 2048, hi=MAX_CONTEXT),
        "rms_norm_eps": _f32(g, p + "attention.layer_norm_rms_epsilon", 1e-6, 1e-30, 0.5),
        "rope_theta": _f32(g, p + "rope.freq_base", 10000.0, 1.0, 1e12),
        "rope_scaling": _rope_scaling(g, p),
        "tie_word_embeddings": "output.weight" not in g.tensors,
    }
    for key, meta in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("pad_token_id", "padding_token_id")):
        value = g.meta_int("tokenizer.ggml." + meta, 0, cfg["vocab_size"] - 1, None)
        if value is not None:
            cfg[key] = value
    return cfg


def _f32(g: GGUFFile, key: str, default: float, lo: float, hi: float) -> float:
    return f32(g.meta_float(key, lo, hi, default))


def _rope_scaling(g: GGUFFile, p: str) -> dict[str, Any] | None:
    kind = g.meta_str(p + "rope.scaling.type", None)
    factor = g.meta_float(p + "rope.scaling.factor", 0.0, 1e4, None)
    if kind in (None, "none") or not factor:
        return None
    if factor < 1e-3:
        raise GGUFError(f"{g.path}: metadata {p}rope.scaling.factor is {factor}, expected a number in [0.001, 10000]")
    if kind == "linear":
        return {"rope_type": "linear", "factor": f32(factor)}
    if kind == "yarn":
        out = {"rope_type": "yarn", "factor": f32(factor)}
        orig = g.meta_int(p + "rope.scaling.original_context_length", 1, MAX_CONTEXT, None)
        if orig is not None:
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
    if not np.isfinite(stored).all() or not 1.0 <= factor <= 1e4:
        raise GGUFError(f"{g.path}: rope_freqs holds values outside [1, 10000] (largest {factor}); the GGUF is malformed")
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
    _check_shapes(g, cfg, LLAMA_BLOCK)
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
    _check_shapes(g, cfg, LLAMA_BLOCK)
    cfg.update(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", attention_bias=False,  # q/k/v biases are implied
        use_sliding_window=False, sliding_window=None, max_window_layers=cfg["num_hidden_layers"],
    )
    return Plan(cfg, _map_names(g, LLAMA_BLOCK))


def gemma3(g: GGUFFile) -> Plan:
    """Gemma 3 text: sandwich norms, q/k norms, interleaved sliding-window layers; norm weights lose llama.cpp's +1."""
    cfg = _common(g, "gemma3")
    _check_shapes(g, cfg, GEMMA3_BLOCK)
    n = cfg["num_hidden_layers"]
    pattern = g.meta_int_list("gemma3.attention.sliding_window_pattern", 0, 1, None)
    if isinstance(pattern, list) and len(pattern) == n:
        sliding = [bool(x) for x in pattern]
    else:
        sliding = [(i + 1) % 6 != 0 for i in range(n)]  # llama.cpp's fixed Gemma 3 pattern: every 6th layer is global
    cfg.update(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=cfg["head_dim"], sliding_window=_int(g, "gemma3.attention.sliding_window", 512, hi=MAX_CONTEXT),
        layer_types=["sliding_attention" if s else "full_attention" for s in sliding],
        rope_local_base_freq=10000.0,  # llama.cpp hard-codes the local rope base for Gemma 3 too
        final_logit_softcapping=None, attn_logit_softcapping=None, attention_bias=False,
    )
    plan = Plan(cfg, _map_names(g, GEMMA3_BLOCK))
    plan.transforms = {name: _minus_one for name in plan.names if name.endswith("norm.weight")}
    return plan


def _no_bias(g: GGUFFile, arch: str) -> None:
    biases = [n for n in g.tensors if n.endswith(".bias")]
    if biases:
        raise GGUFError(f"{g.path}: {arch} has no biases, but the file holds {biases[0]}; the GGUF is not a {arch} model")


def qwen3(g: GGUFFile) -> Plan:
    """Qwen3: llama-like with per-head q/k norms, an explicit head size and no permutation (llama.cpp runs it as NeoX)."""
    cfg = _common(g, "qwen3")
    _check_shapes(g, cfg, QWEN3_BLOCK)
    _no_bias(g, "qwen3")
    cfg.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_act="silu", attention_bias=False,
               use_sliding_window=False, sliding_window=None)
    return Plan(cfg, _map_names(g, QWEN3_BLOCK))


def qwen3moe(g: GGUFFile) -> Plan:
    """Qwen3-MoE (Qwen3-30B-A3B): Qwen3's attention; every layer a mixture of experts (llama.cpp's qwen3moe has no
    dense layers), whose stacked expert tensors are split into HF's one tensor per expert. llama.cpp always renormalizes
    the chosen experts' weights, so norm_topk_prob is true."""
    cfg = _common(g, "qwen3moe")
    n_experts = _int(g, "qwen3moe.expert_count", hi=4096)
    top_k = _int(g, "qwen3moe.expert_used_count", hi=n_experts)
    size = _int(g, "qwen3moe.expert_feed_forward_length")
    h = cfg["hidden_size"]
    shapes = {"ffn_gate_inp": (n_experts, h), "ffn_gate_exps": (n_experts, size, h), "ffn_up_exps": (n_experts, size, h),
              "ffn_down_exps": (n_experts, h, size)}
    _check_shapes(g, cfg, {**QWEN3MOE_BLOCK, **EXPERT_PARTS}, shapes)
    _no_bias(g, "qwen3moe")
    cfg.update(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", hidden_act="silu", attention_bias=False,
               use_sliding_window=False, sliding_window=None, num_experts=n_experts, num_experts_per_tok=top_k,
               moe_intermediate_size=size, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])
    stacked = {f"blk.{i}.{part}.weight": [f"model.layers.{i}.mlp.experts.{e}.{proj}.weight" for e in range(n_experts)]
               for i in range(cfg["num_hidden_layers"]) for part, proj in EXPERT_PARTS.items()}
    return Plan(cfg, _map_names(g, QWEN3MOE_BLOCK, skip=tuple(stacked)), splits=stacked)


def olmo2(g: GGUFFile) -> Plan:
    """OLMo 2: norms after attention and after the MLP, q/k norms over the whole projection; no permutation."""
    cfg = _common(g, "olmo2")
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    _check_shapes(g, cfg, OLMO2_BLOCK, {"attn_q_norm": (q,), "attn_k_norm": (kv,)})
    _no_bias(g, "olmo2")
    cfg.update(architectures=["Olmo2ForCausalLM"], model_type="olmo2", hidden_act="silu", attention_bias=False)
    return Plan(cfg, _map_names(g, OLMO2_BLOCK))


def smollm3(g: GGUFFile) -> Plan:
    """SmolLM3: written by llama.cpp's Llama converter (q/k rows permuted); its NoPE layers are every 4th, a constant
    of llama.cpp's that the file does not carry, so the config states it."""
    plan = llama(g, "smollm3")
    n = plan.config["num_hidden_layers"]
    plan.config.update(architectures=["SmolLM3ForCausalLM"], model_type="smollm3", use_sliding_window=False,
                       no_rope_layers=[int((i + 1) % 4 != 0) for i in range(n)])
    return plan


def phi3(g: GGUFFile) -> Plan:
    """Phi-3, 3.5, Phi-4-mini: fused qkv and gate/up as the checkpoint has them, partial rotary from the rope
    dimension count, longrope's factors from the rope_factors_short/long tensors."""
    from gguf.quants import dequantize

    cfg = _common(g, "phi3")
    d, ffn = cfg["head_dim"], cfg["intermediate_size"]
    _check_shapes(g, cfg, PHI3_BLOCK, {"ffn_up": (2 * ffn, cfg["hidden_size"])})
    _no_bias(g, "phi3")
    rot = _int(g, "phi3.rope.dimension_count", d, hi=d)
    if rot % 2:
        raise GGUFError(f"{g.path}: phi3.rope.dimension_count {rot} is odd; rotary embeddings need an even one")
    cfg.update(architectures=["Phi3ForCausalLM"], model_type="phi3", hidden_act="silu", attention_bias=False,
               partial_rotary_factor=rot / d, rope_scaling=None,
               sliding_window=g.meta_int("phi3.attention.sliding_window", 1, MAX_CONTEXT, None))
    factors = {}
    for kind in ("short", "long"):
        info = g.tensors.get(f"rope_factors_{kind}.weight")
        if info is not None:
            values = dequantize(g.raw(info), info.ggml_type).reshape(-1)
            if values.shape != (rot // 2,) or not (np.isfinite(values).all() and (values > 0).all()):
                raise GGUFError(f"{g.path}: rope_factors_{kind} must hold {rot // 2} positive numbers; the GGUF is malformed")
            factors[f"{kind}_factor"] = [f32(v) for v in values]
    if factors:
        if len(factors) != 2:
            raise GGUFError(f"{g.path}: longrope needs both rope_factors_short and rope_factors_long; the GGUF has one")
        old_ctx = _int(g, "phi3.rope.scaling.original_context_length", cfg["max_position_embeddings"], hi=MAX_CONTEXT)
        cfg["original_max_position_embeddings"] = old_ctx
        cfg["rope_scaling"] = {"rope_type": "longrope", **factors}
        attn = g.meta_float("phi3.rope.scaling.attn_factor", 1e-3, 1e3, None)
        if attn is not None:
            cfg["rope_scaling"]["attention_factor"] = f32(attn)
    return Plan(cfg, _map_names(g, PHI3_BLOCK, skip=("rope_factors_short.weight", "rope_factors_long.weight")))


ARCHS: dict[str, Callable[[GGUFFile], Plan]] = {"llama": llama, "qwen2": qwen2, "gemma3": gemma3, "qwen3": qwen3,
                                               "qwen3moe": qwen3moe, "olmo2": olmo2, "smollm3": smollm3, "phi3": phi3}


def plan_for(g: GGUFFile) -> Plan:
    """The conversion plan for G's general.architecture, or a clear error naming the supported ones."""
    arch = g.meta_str("general.architecture")
    if arch not in ARCHS:
        raise GGUFError(
            f"{g.path}: architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHS))})"
        )
    return ARCHS[arch](g)
