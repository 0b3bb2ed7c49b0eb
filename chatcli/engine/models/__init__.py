"""Architectures, one module each, chosen by config.json's model_type."""

from __future__ import annotations

import importlib

from chatcli.engine.errors import ModelLoadError

# model_type -> module in this package; adding a family is one new file and one line here.
ARCHITECTURES = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3_moe",
    "olmo2": "olmo2",
    "smollm3": "smollm3",
    "phi3": "phi3",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
}


def get_model_class(model_type: str):
    """The Model class for MODEL_TYPE, or a ModelLoadError listing what is supported."""
    module = ARCHITECTURES.get(model_type)
    if module is None:
        raise ModelLoadError(
            f"config.json: model_type {model_type!r} is not supported (supported: {', '.join(sorted(ARCHITECTURES))})"
        )
    try:
        return importlib.import_module(f"{__name__}.{module}").Model
    except ModuleNotFoundError as e:
        raise ModelLoadError(f"architecture {model_type!r} is not available in this build ({e})") from None
