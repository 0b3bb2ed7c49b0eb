"""Aggregate decode speed of batched steps (engine.batch's per-row positions) against one sequence alone.

    PYTHONPATH=. .venv/bin/python bench/batch_decode.py [--model smollm2-135m-instruct] [--quant none|int8|int4]
        [--dtype bfloat16] [--rows 1,2,4,8,16] [--steps 64] [--repeats 3] [--prefill-chunks 32,64,128,256]

For each row count B it prefills B prompts of different lengths into one cache and times STEPS decode steps over
all rows (B tokens a step); "alone" is the one-sequence eager path (the model's own cache, an int position), which
is what the REPL and `serve --parallel 1` run without the compiled step. Medians of REPEATS runs. With
--prefill-chunks it also times one prefill chunk of each size next to a running batch of 4: what one scheduler
turn of engine.batch makes the running streams wait.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def alone(model, steps: int) -> float:
    model.cache.clear()
    ids = _prompt(64, 0)
    model(torch.tensor([ids]), 0, last_only=True)
    t = time.perf_counter()
    for i in range(steps):
        model(torch.tensor([[1]]), 64 + i)
    return steps / (time.perf_counter() - t)


@torch.inference_mode()
def batched(model, rows: int, steps: int) -> float:
    cache = model.make_cache(rows, 64 + 48 + steps + 1)
    for b in range(rows):
        ids = _prompt(64 + 3 * b, b)
        model(torch.tensor([ids]), 0, last_only=True, cache=cache.row(b))
        cache.extend(b, ids)
    tokens = torch.ones(rows, 1, dtype=torch.long)
    t = time.perf_counter()
    for _ in range(steps):
        pos = torch.tensor([len(cache.tokens[b]) for b in range(rows)])
        model(tokens, pos, cache=cache)
        for b in range(rows):
            cache.extend(b, [1])
    return rows * steps / (time.perf_counter() - t)


@torch.inference_mode()
def prefill_chunk_ms(model, size: int) -> float:
    cache = model.make_cache(5, 2 * size + 8)
    t = time.perf_counter()
    model(torch.tensor([_prompt(size, 9)]), 0, last_only=True, cache=cache.row(4))
    return 1000 * (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--quant", default="none")
    ap.add_argument("--rows", default="1,2,4,8,16")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prefill-chunks", default="")
    args = ap.parse_args()

    from chatcli.engine.loader import load_model
    from chatcli.store.resolve import resolve_model

    path = resolve_model(args.model)
    model = load_model(path, args.dtype, 4096, quant=args.quant)
    alone(model, 8)  # warm the kernels
    out = {"model": args.model, "dtype": args.dtype, "quant": args.quant, "threads": torch.get_num_threads()}
    out["alone_tok_s"] = round(statistics.median(alone(model, args.steps) for _ in range(args.repeats)), 1)
    for rows in [int(r) for r in args.rows.split(",")]:
        batched(model, rows, 4)
        out[f"batch{rows}_tok_s"] = round(statistics.median(batched(model, rows, args.steps) for _ in range(args.repeats)), 1)
    for size in [int(s) for s in args.prefill_chunks.split(",") if s]:
        prefill_chunk_ms(model, size)
        out[f"prefill{size}_ms"] = round(statistics.median(prefill_chunk_ms(model, size) for _ in range(args.repeats)), 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
