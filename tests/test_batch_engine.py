"""The batch engine (continuous batching) on tiny real models: what each request gets is what it gets alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from chatcli.engine.batch import BatchEngine
from chatcli.engine.generate import generate_step
from chatcli.engine.loader import load_model
from chatcli.engine.sampling import make_sampler
from tests.tinymodels import make_tiny_model

N = 12  # tokens per request


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(0, 300, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _alone(model, ids, temperature=0.0, seed=None, n=N) -> list[int]:
    model.cache.clear()
    steps = generate_step(model, ids, sampler=make_sampler(temperature, 1.0, 0, 0.0, seed))
    return [next(steps)[0] for _ in range(n)]


def _take(row, n=N) -> list[int]:
    out = [tok for _, (tok, _logits) in zip(range(n), row)]
    row.close()
    return out


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def model(request, tmp_path_factory, tiny_tokenizer_dir):
    folder = make_tiny_model(tmp_path_factory.mktemp(request.param), request.param, tiny_tokenizer_dir)
    return load_model(folder, "float32", 128)


def test_concurrent_greedy_requests_equal_each_alone(model):
    prompts = [_prompt(n, seed) for seed, n in enumerate((7, 40, 3, 19, 26, 11))]  # more requests than rows
    want = [_alone(model, p) for p in prompts]
    engine = BatchEngine(model, rows=4, max_len=128, prefill_chunk=16)  # 40 tokens take three chunks
    try:
        with ThreadPoolExecutor(len(prompts)) as pool:
            got = list(pool.map(lambda p: _take(engine.submit(p, make_sampler(0.0, 1.0, 0, 0.0, None))), prompts))
    finally:
        engine.close()
    assert got == want


def test_a_seed_gives_the_same_text_whatever_runs_beside_it(model):
    ids = _prompt(9, 5)
    want = _alone(model, ids, temperature=1.0, seed=42)
    engine = BatchEngine(model, rows=3, max_len=128)
    try:
        noise = [engine.submit(_prompt(5 + i, 10 + i), make_sampler(1.0, 1.0, 0, 0.0, i)) for i in range(2)]
        got = _take(engine.submit(ids, make_sampler(1.0, 1.0, 0, 0.0, 42)))
        for row in noise:
            row.close()
    finally:
        engine.close()
    assert got == want


def test_a_repeated_prefix_is_reused_and_gives_what_a_fresh_prefill_gives(model):
    system = _prompt(30, 7)
    first, second = system + _prompt(4, 8), system + _prompt(6, 9)
    engine = BatchEngine(model, rows=2, max_len=128)
    try:
        _take(engine.submit(first, make_sampler(0.0, 1.0, 0, 0.0, None)))
        row = engine.submit(second, make_sampler(0.0, 1.0, 0, 0.0, None))
        got = _take(row)
        # The shared system prompt, found in the row the first request left; Gemma's rings (a window of 8) no
        # longer hold the window before position 30 once the first request went on past it, so it prefills whole.
        assert row.cached == (0 if model.config.model_type == "gemma3_text" else 30)
    finally:
        engine.close()
    assert got == _alone(model, second)


def test_a_closed_or_cancelled_request_frees_its_row(model):
    engine = BatchEngine(model, rows=1, max_len=128)
    try:
        cancel = threading.Event()
        row = engine.submit(_prompt(5, 1), make_sampler(0.0, 1.0, 0, 0.0, None), cancel=cancel)
        next(row)
        cancel.set()
        assert list(row) == []  # nothing more once cancelled, whatever was drawn already
        # the only row is free again: a second request runs to completion
        assert len(_take(engine.submit(_prompt(6, 2), make_sampler(0.0, 1.0, 0, 0.0, None)))) == N
    finally:
        engine.close()


def test_a_prefix_outlives_its_row_in_the_prefix_store(model):
    system = _prompt(40, 11)
    engine = BatchEngine(model, rows=1, max_len=128, cache_bytes=1 << 24)
    try:
        _take(engine.submit(system + _prompt(3, 12), make_sampler(0.0, 1.0, 0, 0.0, None)))
        _take(engine.submit(_prompt(20, 13), make_sampler(0.0, 1.0, 0, 0.0, None)))  # the only row, another prompt
        later = system + _prompt(5, 14)
        row = engine.submit(later, make_sampler(0.0, 1.0, 0, 0.0, None))
        got = _take(row)
        ring = model.config.model_type == "gemma3_text"  # a ring is no prefix: nothing is stored for Gemma
        assert row.cached == (0 if ring else 40) and (len(engine.store) == 0) == ring
    finally:
        engine.close()
    assert got == _alone(model, later)
