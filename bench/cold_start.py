"""Time from launching `chatcli ask` to the first byte of its answer, in a fresh process each time (not a test).

    CHATCLI_HOME=$PWD .venv/bin/python bench/cold_start.py [--runs 5] [-- ASK OPTIONS]

Each run starts `chatcli ask --no-save --max-tokens 8 "Say hi"` with stdout a pipe (as a script reads it) and times
the first byte of stdout, then lets the reply finish. In the same run, for scale, it times the floor every cold start
pays: a bare `python -c "import torch"`. Prints the median and the range of each. Issue 22's target is a median of
2 s or less for the default model. The page cache is warm after the first run, as it is for a user's second `ask`;
the first run is reported apart.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def first_byte(argv: list[str]) -> float:
    """Seconds from launching ARGV to the first byte on its stdout (the process is then waited for)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    byte = proc.stdout.read(1)
    elapsed = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode or not byte:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    return elapsed


def whole(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def show(name: str, times: list[float]) -> None:
    print(f"{name:<28} median {statistics.median(times):.2f} s  [{min(times):.2f}-{max(times):.2f}]  n={len(times)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("ask_options", nargs="*", help="after --: passed to chatcli ask (e.g. --dtype float32)")
    args = parser.parse_args()
    ask = [str(BIN / "chatcli"), "ask", "--no-save", "--max-tokens", "8", *args.ask_options, "Say hi"]
    first = first_byte(ask)  # pages cold if nothing read the model since boot
    torch_times, ask_times = [], []
    for _ in range(args.runs):  # interleaved, so a change in the machine's load touches both alike
        torch_times.append(whole([sys.executable, "-c", "import torch"]))
        ask_times.append(first_byte(ask))
    print(f"{'first run (pages cold?)':<28} {first:.2f} s")
    show("import torch", torch_times)
    show("ask, first byte", ask_times)


if __name__ == "__main__":
    main()
