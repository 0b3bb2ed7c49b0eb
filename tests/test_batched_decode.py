"""Batched decode with ragged lengths equals decoding each sequence alone, for every family.

Four prompts of different lengths are prefilled into the rows of one cache, then decoded together for 32 greedy
steps (one forward over all rows, each at its own position); each row's logits and tokens must be what the same
prompt gets decoded alone with the model's own cache. Mid-batch one row is trimmed back and continued, which must
equal a fresh run over the tokens it kept. Gemma 3's tiny model has a window of 8, so its rings wrap many times.
"""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.loader import load_model
from tests.test_qwen3_moe import MOE
from tests.tinymodels import ARCHS

LENGTHS = (5, 17, 9, 30)
STEPS = 32
TRIM_AT, TRIM_BACK = 16, 6  # at step 16, row 2 forgets its last 6 positions and continues from there

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "olmo2", "smollm3", "phi3", "phi3_window", "gemma3"]


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(0, 300, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def _alone(model, ids: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decode of IDS on the model's own one-row cache: the tokens and the logits each was drawn from."""
    model.cache.clear()
    logits = model(torch.tensor([ids]), 0, last_only=True)[0, -1]
    tokens, seen = [], []
    for i in range(steps):
        seen.append(logits)
        tokens.append(int(logits.argmax()))
        logits = model(torch.tensor([[tokens[-1]]]), len(ids) + i)[0, -1]
    return tokens, seen


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory, tiny_tokenizer_dir):
    from tests.tinymodels import make_tiny_model

    arch = request.param
    extra = MOE if arch == "qwen3_moe" else {}
    folder = make_tiny_model(tmp_path_factory.mktemp(arch), "qwen3" if arch == "qwen3_moe" else arch, tiny_tokenizer_dir, **extra)
    assert arch == "qwen3_moe" or arch in ARCHS
    return arch, load_model(folder, "float32", 128)


@torch.inference_mode()
def test_batched_equals_alone(family):
    arch, model = family
    prompts = [_prompt(n, seed) for seed, n in enumerate(LENGTHS)]
    cache = model.make_cache(len(prompts), 128)
    last = []
    for b, ids in enumerate(prompts):  # each row prefilled alone, through a view of its row
        last.append(model(torch.tensor([ids]), 0, last_only=True, cache=cache.row(b))[0, -1])
        cache.extend(b, ids)
    logits = torch.stack(last)  # [4, V]
    seqs = [list(p) for p in prompts]
    got: list[list[torch.Tensor]] = [[] for _ in prompts]
    trimmed_from = None
    for step in range(STEPS):
        if step == TRIM_AT:  # row 2 forgets its tail; its next input is the first token it no longer holds
            keep = len(seqs[2]) - TRIM_BACK
            cache.trim(2, keep - 1)
            assert cache.tokens[2] == seqs[2][: keep - 1]
            seqs[2] = seqs[2][:keep]
            trimmed_from = list(seqs[2])
        nxt = []
        for b in range(len(prompts)):
            if step == TRIM_AT and b == 2:
                nxt.append(seqs[2][-1])  # re-fed, not drawn: its logits were drawn alone before the trim
                continue
            got[b].append(logits[b])
            nxt.append(int(logits[b].argmax()))
            seqs[b].append(nxt[-1])
        pos = torch.tensor([len(cache.tokens[b]) for b in range(len(prompts))])
        logits = model(torch.tensor(nxt)[:, None], pos, cache=cache)[:, 0]
        for b, t in enumerate(nxt):
            cache.extend(b, [t])
    for b, ids in enumerate(prompts):
        if b == 2:
            continue
        tokens, want = _alone(model, ids, STEPS)
        assert seqs[b][len(ids):] == tokens, (arch, b)
        assert max((g - w).abs().max().item() for g, w in zip(got[b], want)) < 1e-4, (arch, b)
    # Row 2: its first TRIM_AT draws as alone, then what a fresh prefill of the tokens it kept continues with.
    tokens, want = _alone(model, prompts[2], TRIM_AT)
    assert seqs[2][len(prompts[2]) : len(prompts[2]) + TRIM_AT] == tokens
    assert max((g - w).abs().max().item() for g, w in zip(got[2][:TRIM_AT], want)) < 1e-4, arch
    rest = STEPS - TRIM_AT - 1
    tokens, want = _alone(model, trimmed_from, rest)
    assert seqs[2][len(trimmed_from) :] == tokens, arch
    assert max((g - w).abs().max().item() for g, w in zip(got[2][TRIM_AT:], want)) < 1e-4, arch
