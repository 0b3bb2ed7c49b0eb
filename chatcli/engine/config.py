"""One config dataclass, read from a Hugging Face config.json (transformers 4.x or 5.x layout); unknown keys are ignored."""

from __future__ import annotations

import json
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
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ModelLoadError(
                    f"config.json: hidden_size ({self.hidden_size}) is not divisible by num_attention_heads "
                    f"({self.num_attention_heads}); set head_dim or fix the config"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ModelLoadError(
                f"config.json: num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ModelLoadError(f"config.json: {name} must be positive, got {getattr(self, name)}")

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
            d = {**d["text_config"], "model_type": d["text_config"].get("model_type", d.get("model_type"))}
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
        return cls(**kwargs, extra={k: v for k, v in d.items() if k not in known})

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
