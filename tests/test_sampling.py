"""The sampler on hand-made distributions."""

from __future__ import annotations

import math

import pytest
import torch

from chatcli.engine.errors import NumericalError, SamplingError
from chatcli.engine.sampling import apply_repeat_penalty, draw_from, make_sampler

LOGITS = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03]))


def draws(sampler, n=2000):
    return torch.bincount(torch.tensor([sampler(LOGITS) for _ in range(n)]), minlength=5)


def test_temperature_zero_is_greedy():
    assert {make_sampler(temperature=0)(LOGITS) for _ in range(20)} == {0}


def test_temperature_one_follows_the_distribution():
    counts = draws(make_sampler(temperature=1.0, seed=0)) / 2000
    assert torch.allclose(counts, LOGITS.exp(), atol=0.04)


def test_temperature_reshapes_as_softmax_of_x_over_t():
    s = make_sampler(temperature=2.0)
    expected = torch.softmax(LOGITS / 2.0, -1)
    assert torch.allclose(s.probabilities(LOGITS), expected)


def test_top_k_keeps_k():
    probs = make_sampler(temperature=1.0, top_k=2).probabilities(LOGITS)
    assert (probs[2:] == 0).all() and math.isclose(probs.sum().item(), 1, rel_tol=1e-6)
    assert torch.allclose(probs[:2], torch.tensor([2 / 3, 1 / 3]))


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = make_sampler(temperature=1.0, top_p=0.7).probabilities(LOGITS)
    assert (probs > 0).tolist() == [True, True, False, False, False]  # 0.5 < 0.7 <= 0.75
    probs = make_sampler(temperature=1.0, top_p=0.1).probabilities(LOGITS)
    assert (probs > 0).tolist() == [True, False, False, False, False]  # the top token always stays


def test_min_p_drops_unlikely_tokens():
    probs = make_sampler(temperature=1.0, min_p=0.2).probabilities(LOGITS)  # threshold 0.1
    assert (probs > 0).tolist() == [True, True, True, False, False]


def test_repeat_penalty_follows_sign_rule():
    logits = torch.tensor([2.0, -2.0, 1.0])
    out = apply_repeat_penalty(logits, torch.tensor([0, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_seeded_runs_repeat_exactly():
    s1, s2 = make_sampler(temperature=1.0, seed=7), make_sampler(temperature=1.0, seed=7)
    assert [s1(LOGITS) for _ in range(50)] == [s2(LOGITS) for _ in range(50)]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"temperature": float("nan")}, "temperature must be >= 0"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"min_p": 2.0}, "min_p must be in [0, 1]"),
    ],
)
def test_out_of_range_parameters_fail(kwargs, words):
    with pytest.raises(SamplingError) as e:
        make_sampler(**kwargs)
    assert words in str(e.value) and e.value.exit_code == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_logits_raise(bad):
    logits = LOGITS.clone()
    logits[1] = bad
    with pytest.raises(NumericalError):
        make_sampler(temperature=0.5)(logits)


@pytest.mark.parametrize("p", [0.1, 0.9, 0.999])
@pytest.mark.parametrize("scale", [8.0, 0.01])  # peaked (the nucleus among the top 1,024) and flat (past it)
def test_top_p_keeps_the_nucleus_a_full_sort_finds(p, scale):
    from chatcli.engine.sampling import top_p_filter

    logits = torch.randn(49152, generator=torch.Generator().manual_seed(3)) * scale
    ordered, order = torch.sort(logits, descending=True)
    probs = ordered.softmax(-1)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep[order[probs.cumsum(-1) - probs < p]] = True
    got = top_p_filter(p)(logits)
    assert torch.equal(torch.isfinite(got), keep) and torch.equal(got[keep], logits[keep])


def test_the_draw_never_picks_a_zero_and_follows_the_distribution():
    # Zeros first, between and last: the cumulative sum is flat there, so the search must step over them.
    probs = torch.tensor([0.0, 0.1, 0.0, 0.0, 0.6, 0.3, 0.0])
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw_from(probs, g) for _ in range(20000)]), minlength=7)
    assert counts[[0, 2, 3, 6]].sum() == 0
    assert torch.allclose(counts.float() / 20000, probs, atol=0.015), counts
    # Unnormalised weights (what a filter leaves) are drawn in proportion too, and one kept token is always drawn.
    assert draw_from(torch.tensor([0.0, 0.0, 2.5, 0.0]), g) == 2
