"""How close the second turn can come to the new message alone, with this machine's matmul kernels (not a test).

    .venv/bin/python bench/attention_floor.py                  # the default model, bf16, 2 threads
    .venv/bin/python bench/attention_floor.py --dtype float32 --model PATH

`chatcli bench` reports turn2_ttft_s against turn2_alone_s: the new tokens prefilled after a 989-token cached
conversation, and the same number of tokens prefilled at position 0. The difference is the new tokens' attention over
the cached keys. This script times, in one process and alternating (medians of --runs):
- alone: the engine prefilling N new tokens at position 0;
- turn2: the engine prefilling them at position CONTEXT, after the context is in the cache;
- gemm: only the two matrix products that attention cannot do without (the scores and the weighted values), for
  every kv head of every layer over all the keys, on contiguous tensors in the model's dtype: no softmax, no mask,
  no copies (a model with sliding-window layers, such as Gemma 3, attends to fewer keys: its floor is lower);
- softmax: PyTorch's softmax over those scores, every layer.
(alone + gemm) / alone is a floor for the ratio on this machine: no attention built on these GEMMs gets under it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a model folder or store name (default: the default model)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--context", type=int, default=989, help="cached tokens before the new message (the bench's 989)")
    p.add_argument("--new", type=int, default=28, help="new tokens (the bench's 28)")
    p.add_argument("--runs", type=int, default=15)
    a = p.parse_args(argv)

    from chatcli.backends.local import LocalBackend
    from chatcli.bench import prompt_ids
    from chatcli.engine.generate import generate_step
    from chatcli.engine.sampling import make_sampler
    from chatcli.store.resolve import resolve_model

    backend = LocalBackend(dtype=a.dtype, quant="none", compile="off", threads=a.threads)
    backend.load(str(resolve_model(a.model)))
    import torch

    model, greedy, c = backend.model, make_sampler(temperature=0), backend.model.config
    ids = prompt_ids(backend.tokenizer, a.context + a.new)
    context, new = ids[: a.context], ids[a.context:]

    def first_token(step) -> float:
        t0 = time.perf_counter()
        next(step)
        dt = time.perf_counter() - t0
        step.close()
        return dt

    group = c.num_attention_heads // c.num_key_value_heads
    keys = a.context + a.new
    # Contiguous, batched over kv heads, each kv head's query heads stacked as rows: the fastest arrangement measured
    # here (bmm on the cache's own strided slices, or one 2-D matmul per head, ran 30-40 % slower).
    q = torch.randn(c.num_key_value_heads, group * a.new, c.head_dim, dtype=model.compute_dtype)
    k = torch.randn(c.num_key_value_heads, c.head_dim, keys, dtype=model.compute_dtype)
    v = torch.randn(c.num_key_value_heads, keys, c.head_dim, dtype=model.compute_dtype)
    scores = torch.bmm(q, k)

    def gemms() -> float:
        t0 = time.perf_counter()
        for _ in range(c.num_hidden_layers):
            torch.bmm(torch.bmm(q, k), v)
        return time.perf_counter() - t0

    def softmax() -> float:
        t0 = time.perf_counter()
        for _ in range(c.num_hidden_layers):
            torch.softmax(scores, -1)
        return time.perf_counter() - t0

    with torch.inference_mode():
        first_token(generate_step(model, new, sampler=greedy))  # warm-up: first-call costs of the kernels
        first_token(generate_step(model, context, sampler=greedy))  # the context, in the cache from here on
        gemms(), softmax()
        times: dict[str, list[float]] = {"alone": [], "turn2": [], "gemm": [], "softmax": []}
        for _ in range(a.runs):
            times["alone"].append(first_token(generate_step(model, new, sampler=greedy)))
            # generate_step at position 0 overwrote only the first N positions; the context is put back first.
            first_token(generate_step(model, context[: a.new], sampler=greedy))
            times["turn2"].append(first_token(generate_step(model, new, sampler=greedy, start_pos=a.context)))
            times["gemm"].append(gemms())
            times["softmax"].append(softmax())

    med = {name: statistics.median(ts) for name, ts in times.items()}
    flops = c.num_hidden_layers * c.num_attention_heads * a.new * keys * c.head_dim * 2 * 2
    print(f"{a.dtype}, {a.threads} threads, {a.new} new tokens after {a.context} cached, medians of {a.runs}:")
    for name in times:
        lo, hi = min(times[name]), max(times[name])
        print(f"  {name:6s} {med[name] * 1e3:7.1f} ms  [{lo * 1e3:.1f}-{hi * 1e3:.1f}]")
    print(f"  the second turn's ratio now: {med['turn2'] / med['alone']:.2f}")
    print(f"  the floor with these GEMMs:  {(med['alone'] + med['gemm']) / med['alone']:.2f} "
          f"(the GEMMs alone run at {flops / med['gemm'] / 1e9:.0f} GFLOP/s)")
    print(f"  with PyTorch's softmax too:  {(med['alone'] + med['gemm'] + med['softmax']) / med['alone']:.2f}")
    print(f"  the budget for a ratio of 1.2: {0.2 * med['alone'] * 1e3:.1f} ms of attention, "
          f"{flops / (0.2 * med['alone']) / 1e9:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
