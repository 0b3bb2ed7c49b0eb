"""The new families' own config keys, when wrong, are named by key at load (one line, no traceback further up)."""

from __future__ import annotations

import json

import pytest

from chatcli.engine.errors import ModelLoadError
from chatcli.engine.loader import load_model

CASES = [
    ("smollm3", {"no_rope_layers": [1, 0]}, "no_rope_layers must list 0 or 1 for each of the 4 layers"),
    ("smollm3", {"no_rope_layer_interval": 0}, "no_rope_layer_interval is 0"),
    ("smollm3", {"use_sliding_window": True}, "use_sliding_window is true"),
    ("qwen3", {"use_sliding_window": True}, "sliding-window"),
    ("olmo2", {"attention_bias": True}, "attention_bias is true"),
    ("phi3", {"partial_rotary_factor": 1.5}, "partial_rotary_factor is 1.5"),
    ("phi3", {"partial_rotary_factor": 0.2}, "leaves 3 rotary dimensions"),  # 16 * 0.2 rounds down to an odd width
    ("phi3", {"rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}}, "rope_scaling.long_factor must be 6 positive numbers"),
    ("phi3", {"original_max_position_embeddings": "4k"}, "original_max_position_embeddings is '4k'"),
    ("phi3", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "not one Phi-3 uses"),
]


@pytest.mark.parametrize("arch,change,message", CASES, ids=[f"{a}-{next(iter(c))}" for a, c, _ in CASES])
def test_bad_family_key_is_named(arch, change, message, tiny_model_factory):
    path = tiny_model_factory(arch)
    config = json.loads((path / "config.json").read_text())
    config.update(change)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=message):
        load_model(path, "float32")
