"""models/base.stack_rows, what the Llama family's sanitize does to a checkpoint: parts stacked in order (biases too),
a missing part named as the checkpoint names it, parts of different widths refused."""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.errors import ModelLoadError
from chatcli.engine.models.base import MissingTensors, stack_rows

FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj")}


def parts(prefix="model.layers.0.self_attn.", bias=True):
    state = {f"{prefix}{p}.weight": torch.full((n, 4), float(i)) for i, (p, n) in enumerate([("q_proj", 4), ("k_proj", 2), ("v_proj", 2)])}
    if bias:
        state |= {f"{prefix}{p}.bias": torch.full((n,), float(i)) for i, (p, n) in enumerate([("q_proj", 4), ("k_proj", 2), ("v_proj", 2)])}
    return state


def test_parts_are_stacked_in_order_and_the_rest_is_kept():
    state = stack_rows({**parts(), "model.norm.weight": torch.ones(4)}, FUSED)
    assert sorted(state) == ["model.layers.0.self_attn.qkv_proj.bias", "model.layers.0.self_attn.qkv_proj.weight", "model.norm.weight"]
    assert state["model.layers.0.self_attn.qkv_proj.weight"][:, 0].tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    assert state["model.layers.0.self_attn.qkv_proj.bias"].tolist() == [0, 0, 0, 0, 1, 1, 2, 2]


def test_a_missing_part_is_named_as_the_checkpoint_names_it():
    state = parts(bias=False)
    del state["model.layers.0.self_attn.q_proj.weight"]
    with pytest.raises(MissingTensors) as e:
        stack_rows(state, FUSED)
    assert e.value.names == ["model.layers.0.self_attn.q_proj.weight"]
    assert e.value.unbuilt == {"model.layers.0.self_attn.qkv_proj.weight"} and not e.value.state


def test_parts_of_different_widths_are_refused():
    state = parts(bias=False)
    state["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(2, 5)
    with pytest.raises(ModelLoadError, match=r"k_proj.weight \[2, 5\].*same columns"):
        stack_rows(state, FUSED)
