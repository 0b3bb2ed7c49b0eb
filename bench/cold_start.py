"""A cold `chatcli ask` to its first byte (chatcli.bench.cold_ask, what `chatcli bench` reports as cold_ask_s),
beside the floor every cold start pays, a bare `import torch`, timed in the same run (not a test).

    CHATCLI_HOME=$PWD .venv/bin/python bench/cold_start.py [--runs 5] [--model M] [--dtype auto] [--quant none]

The two are interleaved, so a change in the machine's load touches both alike; medians and ranges are printed, and
the first ask (whose pages may be cold) apart. Issue 22's target is a median of 2 s or less for the default model.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from chatcli.bench import cold_ask


def show(name: str, times: list[float]) -> None:
    print(f"{name:<24} median {statistics.median(times):.2f} s  [{min(times):.2f}-{max(times):.2f}]  n={len(times)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quant", default="none")
    parser.add_argument("--compile", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    args = vars(parser.parse_args())

    def one_ask() -> float:
        times = cold_ask(args, 1)
        if not times:
            sys.exit(f"chatcli ask --model {args['model']} failed; run it by hand to see why")
        return times[0]

    first, torch_times, ask_times = one_ask(), [], []
    for _ in range(args["runs"]):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        torch_times.append(time.perf_counter() - start)
        ask_times.append(one_ask())
    print(f"{'first ask (cold pages?)':<24} {first:.2f} s")
    show("import torch", torch_times)
    show("ask, first byte", ask_times)


if __name__ == "__main__":
    main()
