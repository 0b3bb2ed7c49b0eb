"""Where a decode step's time goes, per op: torch.profiler over eager decode steps of the local engine.

    CHATCLI_HOME=$PWD .venv/bin/python bench/profile_step.py --quant int4 --threads 2 [--model M] [--dtype D]
        [--steps 64] [--prompt 128]

It prints the ops by self CPU time, summed over the steps, as milliseconds per step and shares of the step, and the
step's wall time eager and compiled (the compiled step is one AOTInductor call, so only its total is seen; the eager
profile says which ops that total is made of). The profiler's own cost per op inflates the eager figures a little;
the unprofiled eager step is printed beside them.
"""

from __future__ import annotations

import argparse
import time


def _decode_ms(backend, ids: list[int], steps: int) -> float:
    """Milliseconds per decode step after a prompt, greedy, unprofiled (median of three passes)."""
    import statistics

    from chatcli.engine.generate import generate_step
    from chatcli.engine.sampling import make_sampler

    times = []
    for _ in range(3):
        gen = generate_step(backend.model, ids, sampler=make_sampler(temperature=0))
        next(gen)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(gen)
        times.append((time.perf_counter() - t0) / steps * 1e3)
        gen.close()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="store name or folder (default: the configured model)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--quant", default="none", choices=["none", "int8", "int4"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens before the profiled steps")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from chatcli.backends.local import LocalBackend
    from chatcli.bench import prompt_ids
    from chatcli.engine import cpu
    from chatcli.engine.generate import generate_step
    from chatcli.engine.sampling import make_sampler
    from chatcli.store.resolve import resolve_model

    model = resolve_model(a.model)
    eager = LocalBackend(dtype=a.dtype, quant=a.quant, compile="off", threads=a.threads)
    eager.load(str(model))
    ids = prompt_ids(eager.tokenizer, a.prompt)
    eager_ms = _decode_ms(eager, ids, a.steps)

    gen = generate_step(eager.model, ids, sampler=make_sampler(temperature=0))
    next(gen)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            next(gen)
    gen.close()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{cpu.info().summary}; {a.threads} threads; {eager.model.compute_dtype}, quant {a.quant}; "
          f"{a.steps} steps after {a.prompt} prompt tokens")
    print(f"{'op':44s} {'ms/step':>8s} {'share':>6s} {'calls/step':>10s}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: a.top]:
        print(f"{e.key[:44]:44s} {e.self_cpu_time_total / 1e3 / a.steps:8.3f} {e.self_cpu_time_total / total:6.1%} "
              f"{e.count / a.steps:10.1f}")
    print(f"{'all ops (profiled)':44s} {total / 1e3 / a.steps:8.3f}")
    print(f"eager step, unprofiled: {eager_ms:.2f} ms")
    eager.close()

    compiled = LocalBackend(dtype=a.dtype, quant=a.quant, compile="on", threads=a.threads)
    compiled.load(str(model))
    if compiled.compiled:
        print(f"compiled step: {_decode_ms(compiled, ids, a.steps):.2f} ms")
    else:
        print("compiled step: not available for this model and settings")
    compiled.close()


if __name__ == "__main__":
    main()
