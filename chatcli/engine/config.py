"""One config dataclass, read from a Hugging Face config.json (transformers 4.x or 5.x layout); unknown keys are ignored."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from chatcli.engine.errors import ModelLoadError

# Where config.json omits a key, transformers' config class for the family supplies its own default; Hub configs
# rely on that (Gemma 3 leaves out tie_word_embeddings and sometimes head_dim, which is not hidden_size / heads).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": dict(
        tie_word_embeddings=True, head_dim=256, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
        query_pre_attn_scalar=256, sliding_window=4096, max_position_embeddings=131_072, hidden_activation="gelu_pytorch_tanh",
    ),
}
FAMILY_DEFAULTS["gemma3"] = FAMILY_DEFAULTS["gemma3_text"]
FAMILY_DEFAULTS["qwen3"] = dict(head_dim=128, max_position_embeddings=32_768)
FAMILY_DEFAULTS["olmo2"] = dict(rms_norm_eps=1e-5, max_position_embeddings=2048)

# Generous bounds, far past any released model, that keep a hostile or corrupt config from building a billion
# layers or sizing a cache before the weights are compared with it (engine/loader.py does that next).
SIZE_BOUNDS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 24),
    "hidden_size": (1, 1 << 17),
    "intermediate_size": (1, 1 << 20),
    "num_hidden_layers": (1, 1024),
    "num_attention_heads": (1, 1024),
    "head_dim": (1, 4096),
    "max_position_embeddings": (1, 1 << 24),
    "sliding_window": (1, 1 << 24),
    "sliding_window_pattern": (1, 1024),
}

REQUIRED = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass
class ModelConfig:
    """Hyper-parameters named exactly as config.json names them."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    # Gemma 3 (engine/models/gemma3.py); ignored by the Llama family.
    query_pre_attn_scalar: float | None = None
    rope_local_base_freq: float | None = None
    layer_types: list[str] | None = None
    sliding_window_pattern: int | None = None
    hidden_activation: str | None = None
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Bounds first: every later step divides by these, and the model is built from them before any weight is read.
        for name, (lo, hi) in SIZE_BOUNDS.items():
            _bounded(name, getattr(self, name), lo, hi)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ModelLoadError(
                    f"config.json: hidden_size ({self.hidden_size}) is not divisible by num_attention_heads "
                    f"({self.num_attention_heads}); set head_dim or fix the config"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        _bounded("head_dim", self.head_dim, *SIZE_BOUNDS["head_dim"])
        _bounded("num_key_value_heads", self.num_key_value_heads, 1, self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ModelLoadError(
                f"config.json: num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        _positive_float("rms_norm_eps", self.rms_norm_eps, hi=1.0)
        # A base of 1 or less makes every rotation frequency 1 or more: positions alias, and 0 divides by zero.
        _positive_float("rope_theta", self.rope_theta, lo_exclusive=1.0)
        if self.rope_local_base_freq is not None:
            _positive_float("rope_local_base_freq", self.rope_local_base_freq, lo_exclusive=1.0)
        for name in ("query_pre_attn_scalar", "final_logit_softcapping", "attn_logit_softcapping"):
            if getattr(self, name) is not None:  # real ones are 30 to 256; near float32's limit, cap * tanh overflows
                _positive_float(name, getattr(self, name), hi=1e6)
        _check_rope_scaling(self.rope_scaling)
        for i in ([self.bos_token_id] if self.bos_token_id is not None else []) + self.eos_token_ids:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.vocab_size:
                raise ModelLoadError(
                    f"config.json: token id {i!r} (bos_token_id or eos_token_id) is outside the vocabulary (vocab_size {self.vocab_size})"
                )
        if self.layer_types is not None and not all(isinstance(t, str) for t in self.layer_types):
            raise ModelLoadError(f"config.json: layer_types must be a list of strings, got {self.layer_types!r}")

    @property
    def eos_token_ids(self) -> list[int]:
        """eos_token_id as a list (config.json allows an int or a list)."""
        e = self.eos_token_id
        return [] if e is None else [e] if isinstance(e, int) else list(e)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Build from a parsed config.json, checking types of the keys we use."""
        if not isinstance(d, dict):
            raise ModelLoadError(f"{source}: expected a JSON object")
        d = dict(d)
        if "text_config" in d and "hidden_size" not in d:  # multimodal wrappers keep the LM config nested
            if not isinstance(d["text_config"], dict):
                raise ModelLoadError(f"{source}: key 'text_config' must be an object, got {type(d['text_config']).__name__}")
            d = {**d["text_config"], "model_type": d["text_config"].get("model_type", d.get("model_type"))}
        if not isinstance(d.get("model_type"), str):
            raise ModelLoadError(f"{source}: key 'model_type' must be a string naming the architecture, got {d.get('model_type')!r}")
        _flatten_rope_parameters(d)
        for key, value in FAMILY_DEFAULTS.get(d.get("model_type"), {}).items():
            d.setdefault(key, value)
        for key in REQUIRED:
            if key not in d or d[key] is None:
                raise ModelLoadError(f"{source}: missing key {key!r}")
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key not in known:
                continue
            kwargs[key] = _check_type(key, value, known[key].type, source)
        try:
            return cls(**kwargs, extra={k: v for k, v in d.items() if k not in known})
        except ModelLoadError as e:  # the checks in __post_init__ know the key, not the file
            raise ModelLoadError(str(e).replace("config.json:", f"{source}:", 1)) from None

    @classmethod
    def from_folder(cls, path: str | Path) -> ModelConfig:
        """Read PATH/config.json."""
        file = Path(path) / "config.json"
        if not file.is_file():
            raise ModelLoadError(f"{file}: missing; a model folder needs config.json")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{file}: not valid JSON ({e})") from None
        return cls.from_dict(data, str(file))


def _bounded(name: str, value: Any, lo: int, hi: int) -> None:
    if value is None and name in ("head_dim", "sliding_window", "sliding_window_pattern", "num_key_value_heads"):
        return
    if not lo <= value <= hi:
        raise ModelLoadError(f"config.json: {name} is {value}; it must lie in [{lo}, {hi}], so the config is corrupt")


def _positive_float(name: str, value: float, hi: float = math.inf, lo_exclusive: float = 0.0) -> None:
    # JSON parsed by Python accepts NaN and Infinity, which would surface only later as NaN logits.
    if not (math.isfinite(value) and lo_exclusive < value <= hi):
        bound = f"({lo_exclusive}, {hi}]" if hi != math.inf else f"greater than {lo_exclusive}"
        raise ModelLoadError(f"config.json: {name} is {value}; it must be a finite number {bound}")


ROPE_NUMBERS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
                "attention_factor", "mscale", "mscale_all_dim")


def _check_rope_scaling(scaling: dict | None) -> None:
    """The numbers rope.py reads from rope_scaling: finite and positive (a zero factor divides every frequency by 0)."""
    if not scaling:
        return
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if not isinstance(kind, str):
        raise ModelLoadError(f"config.json: rope_scaling.rope_type must be a string, got {kind!r}")
    for key in ROPE_NUMBERS:
        if key in scaling and scaling[key] is not None:
            v = scaling[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ModelLoadError(f"config.json: rope_scaling.{key} must be a number, got {v!r}")
            _positive_float(f"rope_scaling.{key}", float(v))
    if kind == "llama3" and scaling.get("low_freq_factor", 1.0) == scaling.get("high_freq_factor", 4.0):
        raise ModelLoadError("config.json: rope_scaling.low_freq_factor equals high_freq_factor; the llama3 blend divides by their difference")
    if kind in ("linear", "llama3", "yarn") and "factor" not in scaling:
        raise ModelLoadError(f"config.json: rope_scaling of type {kind!r} needs a factor")
    if kind in ("llama3", "yarn") and "original_max_position_embeddings" not in scaling:
        raise ModelLoadError(f"config.json: rope_scaling of type {kind!r} needs original_max_position_embeddings")


def _flatten_rope_parameters(d: dict[str, Any]) -> None:
    """transformers 5 writes rope_parameters; fold it back into rope_theta / rope_scaling."""
    rp = d.get("rope_parameters")
    if not isinstance(rp, dict):
        return
    if "full_attention" in rp or "sliding_attention" in rp:  # per-layer-type parameters (Gemma 3)
        full, local = rp.get("full_attention", {}), rp.get("sliding_attention", {})
        d.setdefault("rope_theta", full.get("rope_theta", d.get("rope_theta")))
        if "rope_theta" in local:
            d.setdefault("rope_local_base_freq", local["rope_theta"])
        rp = full
    if "rope_theta" in rp:
        d.setdefault("rope_theta", rp["rope_theta"])
    if "partial_rotary_factor" in rp:  # Phi-3 and others: kept there even when the rope itself is plain
        d.setdefault("partial_rotary_factor", rp["partial_rotary_factor"])
    if rp.get("rope_type", "default") != "default" and not d.get("rope_scaling"):
        d["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}


def _check_type(key: str, value: Any, annotation: Any, source: str) -> Any:
    ann = str(annotation)
    ok = True
    if ann.startswith("int |") or ann == "int":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (value is None and "None" in ann) or (
            "list" in ann and isinstance(value, list)
        )
    elif ann.startswith("float"):
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (value is None and "None" in ann)
        value = float(value) if ok and value is not None else value
    elif ann == "bool":
        ok = isinstance(value, bool)
    elif ann == "str" or ann.startswith("str"):
        ok = isinstance(value, str) or (value is None and "None" in ann)
    elif ann.startswith("dict"):
        ok = isinstance(value, dict) or value is None
    elif ann.startswith("list"):
        ok = isinstance(value, list) or value is None
    if not ok:
        raise ModelLoadError(f"{source}: key {key!r} has the wrong type ({type(value).__name__}: {value!r}); expected {ann}")
    return value
