"""Load benchmark for `chatcli serve`: N concurrent streaming clients for a fixed time (not a test).

    .venv/bin/python bench/serve_load.py                       # 8 clients, 30 s, the default model
    .venv/bin/python bench/serve_load.py --model PATH --clients 4 --duration 10
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000/v1   # an already running server

It starts the server in a subprocess (unless --url), warms it up with the same load, then measures: aggregate
completion tok/s, p50/p95 time to first token, errors, incomplete replies, and the server's resident memory
(VmRSS) after warm-up against its peak and end. Exit 1 if any request failed or was incomplete, or RSS grew > 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai

PROMPTS = [
    "Explain what a hash table is in two sentences.",
    "Write a haiku about the sea.",
    "What is the capital of France, and why is it famous?",
    "Give three tips for writing readable Python.",
    "Summarise the plot of Romeo and Juliet briefly.",
    "How does a bicycle stay upright?",
    "List five fruits and their colours.",
    "What does HTTP stand for and what is it for?",
]


def start_server(model: str | None, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`chatcli serve --port 0` in a subprocess; its URL from the ready line."""
    chatcli = Path(sys.executable).parent / "chatcli"
    cmd = [str(chatcli) if chatcli.exists() else sys.executable, *([] if chatcli.exists() else ["-m", "chatcli"])]
    cmd += ["serve", "--port", "0", "--max-queue", "64", *(["--model", model] if model else []), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        found = re.search(r"at (http://\S+/v1)", line)
        if found:
            # keep draining stderr (the access log) so the server never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, found.group(1)
        sys.stderr.write(line)
    raise SystemExit(f"chatcli serve exited with {proc.wait()} before listening")


def rss_mib(pid: int) -> float:
    """Resident memory of PID in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Results:
    """What the clients saw, shared between their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ttft: list[float] = []
        self.tokens = 0
        self.requests = 0
        self.errors: list[str] = []
        self.incomplete = 0
        self.last_done = 0.0


def one_request(client: openai.OpenAI, model: str, prompt: str, max_tokens: int, seed: int, out: Results) -> None:
    """One streamed chat completion; counts tokens (from usage), TTFT and whether it ended properly."""
    t0 = time.perf_counter()
    first = None
    finish = usage = None
    try:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True, max_tokens=max_tokens,
            temperature=0.7, seed=seed, stream_options={"include_usage": True})
        for event in stream:
            if event.usage:
                usage = event.usage
            for choice in event.choices:
                if choice.delta.content and first is None:
                    first = time.perf_counter() - t0
                finish = choice.finish_reason or finish
    except Exception as e:  # a benchmark counts failures instead of stopping
        with out.lock:
            out.errors.append(f"{type(e).__name__}: {e}")
        return
    with out.lock:
        out.requests += 1
        out.last_done = time.perf_counter()
        if finish not in ("stop", "length") or usage is None:
            out.incomplete += 1
            return
        out.tokens += usage.completion_tokens
        if first is not None:
            out.ttft.append(first)


def load(url: str, model: str, clients: int, seconds: float, max_tokens: int, api_key: str) -> tuple[Results, float]:
    """CLIENTS threads send requests back to back for SECONDS; requests in flight at the end are finished."""
    out = Results()
    stop_at = time.perf_counter() + seconds

    def client_loop(i: int) -> None:
        client = openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=600)
        n = 0
        while time.perf_counter() < stop_at:
            one_request(client, model, PROMPTS[(i + n) % len(PROMPTS)], max_tokens, 1000 * i + n, out)
            n += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, (out.last_done or time.perf_counter()) - t0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model for the server to load (default: the config's model)")
    ap.add_argument("--url", help="benchmark an already running server at this /v1 URL instead of starting one")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of measured load")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds of the same load before measuring")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("serve_args", nargs="*", help="extra `chatcli serve` options after --")
    args = ap.parse_args()

    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args.model, args.serve_args)
    try:
        client = openai.OpenAI(base_url=url, api_key=args.api_key)
        model = client.models.list().data[0].id
        load(url, model, args.clients, args.warmup, args.max_tokens, args.api_key)
        samples: list[float] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.5):
                samples.append(rss_mib(proc.pid))

        if proc is not None:
            base = rss_mib(proc.pid)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        out, wall = load(url, model, args.clients, args.duration, args.max_tokens, args.api_key)
        sampling.set()
        summary = {
            "model": model, "clients": args.clients, "duration_s": round(wall, 1), "max_tokens": args.max_tokens,
            "requests": out.requests, "errors": len(out.errors), "incomplete": out.incomplete,
            "completion_tokens": out.tokens, "aggregate_tok_s": round(out.tokens / wall, 1) if wall else 0.0,
            "ttft_p50_s": round(percentile(out.ttft, 50), 3), "ttft_p95_s": round(percentile(out.ttft, 95), 3),
            "ttft_mean_s": round(statistics.fmean(out.ttft), 3) if out.ttft else None,
        }
        growth_ok = True
        if proc is not None:
            end = rss_mib(proc.pid)
            peak = max(samples + [end])
            growth = (end - base) / base * 100
            growth_ok = growth <= 10
            summary.update(rss_after_warmup_mib=round(base, 1), rss_peak_mib=round(peak, 1),
                           rss_end_mib=round(end, 1), rss_growth_pct=round(growth, 1))
        if args.json:
            print(json.dumps(summary))
        else:
            for key, value in summary.items():
                print(f"{key:22} {value}")
            for error in out.errors[:5]:
                print(f"error: {error}")
        return 0 if not out.errors and not out.incomplete and growth_ok else 1
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    sys.exit(main())
