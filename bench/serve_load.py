"""Load benchmark for `chatcli serve`: N concurrent streaming clients for a fixed time, N in turn (not a test).

    .venv/bin/python bench/serve_load.py                                  # 1,4,8,16 clients, 30 s each
    .venv/bin/python bench/serve_load.py --clients 1,4 --duration 20 --compare llama-server -- --quant int4
    .venv/bin/python bench/serve_load.py --clients 8 --parallel-per-count --compare llama-server -- --quant int4
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000/v1   # an already running server

It starts `chatcli serve` in a subprocess (unless --url; options after -- go to it) and, for each client count,
warms it up with the same load and then measures: aggregate decode tok/s (completion tokens over the wall time), p50
and p95 time to first token, p95 of the gaps between streamed pieces, errors and incomplete replies, and the server's
resident memory (VmRSS) before and after that count's load, and (chatcli) what of that growth is the prompt cache
filling towards --cache-ram (its /metrics gauge). After the rows it checks the head-of-line target: TTFT p95 at N
clients against twice one client's p95 plus N-1 lone prefills. With --compare llama-server it then runs llama.cpp's
`llama-server -np N -cb` for each N, one after the other, on the GGUF the model came from at chatcli's weight bits
(int4 Q4_0, int8 Q8_0, bfloat16 BF16, float32 F32; made once by llama-quantize when the source is another type, or
--llama-type / --gguf), with the same threads, prompts, seeds and max_tokens (build it once with
bench/build_llama_cpp.py). --parallel-per-count starts chatcli serve afresh for each N with --parallel N too; else
one server, with its own --parallel, serves every count. Exit 1 if any chatcli request failed or was incomplete, or
its RSS grew > 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
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


def start_chatcli(model: str | None, threads: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`chatcli serve --port 0` in a subprocess; its URL from the ready line."""
    chatcli = Path(sys.executable).parent / "chatcli"
    cmd = [str(chatcli) if chatcli.exists() else sys.executable, *([] if chatcli.exists() else ["-m", "chatcli"])]
    cmd += ["serve", "--port", "0", "--max-queue", "64", "--threads", str(threads),
            *(["--model", model] if model else []), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        found = re.search(r"at (http://\S+/v1)", line)
        if found:
            # keep draining stderr (the access log) so the server never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, found.group(1)
        sys.stderr.write(line)
    raise SystemExit(f"chatcli serve exited with {proc.wait()} before listening")


def start_llama_server(binary: Path, gguf: Path, slots: int, threads: int, ctx_per_slot: int) -> tuple[subprocess.Popen, str]:
    """`llama-server -np SLOTS -cb` on GGUF at a free port; its /v1 URL once /health answers 200."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots), "-cb",
           "-t", str(threads), "-tb", str(threads), "-c", str(slots * ctx_per_slot), "--no-webui", "--log-disable"]
    print("+ " + " ".join(cmd), file=sys.stderr)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama-server exited with {proc.returncode} while starting: {' '.join(cmd)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("llama-server did not become healthy within 120 s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        self.gaps: list[float] = []
        self.tokens = 0
        self.requests = 0
        self.errors: list[str] = []
        self.incomplete = 0
        self.last_done = 0.0


def one_request(client: openai.OpenAI, model: str, prompt: str, max_tokens: int, seed: int, out: Results) -> None:
    """One streamed chat completion: its tokens (usage, else one per content event, as llama-server streams them),
    TTFT, the gaps between content events, and whether it ended properly."""
    t0 = time.perf_counter()
    times: list[float] = []
    finish = usage = None
    try:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True, max_tokens=max_tokens,
            temperature=0.7, seed=seed, stream_options={"include_usage": True})
        for event in stream:
            if event.usage:
                usage = event.usage
            for choice in event.choices:
                if choice.delta.content:
                    times.append(time.perf_counter())
                finish = choice.finish_reason or finish
    except Exception as e:  # a benchmark counts failures instead of stopping
        with out.lock:
            out.errors.append(f"{type(e).__name__}: {e}")
        return
    with out.lock:
        out.requests += 1
        out.last_done = time.perf_counter()
        if finish not in ("stop", "length"):
            out.incomplete += 1
            return
        out.tokens += usage.completion_tokens if usage is not None else len(times)
        if times:
            out.ttft.append(times[0] - t0)
            out.gaps.extend(b - a for a, b in zip(times, times[1:]))


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


def measure(server: str, url: str, pid: int | None, clients: int, args) -> dict:
    """Warm-up then the measured load at CLIENTS; one summary row."""
    client = openai.OpenAI(base_url=url, api_key=args.api_key)
    model = client.models.list().data[0].id
    load(url, model, clients, args.warmup, args.max_tokens, args.api_key)
    base = rss_mib(pid) if pid else None
    cache_base = cache_bytes(url)
    out, wall = load(url, model, clients, args.duration, args.max_tokens, args.api_key)
    row = {"server": server, "clients": clients, "duration_s": round(wall, 1), "requests": out.requests,
           "errors": len(out.errors), "incomplete": out.incomplete, "completion_tokens": out.tokens,
           "decode_tok_s": round(out.tokens / wall, 1) if wall else 0.0,
           "ttft_p50_s": round(percentile(out.ttft, 50), 3), "ttft_p95_s": round(percentile(out.ttft, 95), 3),
           "gap_p95_ms": round(1000 * percentile(out.gaps, 95), 1)}
    if pid:
        end = rss_mib(pid)
        row.update(rss_mib=round(end, 1), rss_growth_pct=round((end - base) / base * 100, 1))
        cache_end = cache_bytes(url)
        if cache_base is not None and cache_end is not None:  # the growth that is not the prompt cache filling up
            grown = (cache_end - cache_base) / 2**20
            row.update(prompt_cache_mib=round(cache_end / 2**20, 1),
                       rss_growth_net_of_cache_pct=round((end - base - grown) / base * 100, 1))
    for error in out.errors[:3]:
        print(f"{server} x{clients} error: {error}", file=sys.stderr)
    return row


def peer_gguf(model_id: str, serve_args: list[str], wanted: str | None) -> Path:
    """The GGUF llama-server gets: the one the store's MODEL_ID came from, or (made once by llama-quantize) its copy
    at the weight type matching the server's --quant and --dtype (chatcli.llamacpp.peer_types), or WANTED."""
    from chatcli.bench import source_gguf
    from chatcli.llamacpp import find_tool, gguf_of_type, peer_types
    from chatcli.settings import models_dir

    source = source_gguf(models_dir() / model_id)
    if source is None:
        raise SystemExit(f"no source GGUF for {model_id} in the store; pass --gguf PATH")
    opts = dict(zip(serve_args, serve_args[1:]))
    opts |= dict(a.split("=", 1) for a in serve_args if a.startswith("--") and "=" in a)
    dtype = opts.get("--dtype", "auto")
    if dtype == "auto":
        from chatcli.engine.loader import resolve_dtype

        dtype = str(resolve_dtype("auto")).removeprefix("torch.")
    wanted = wanted or peer_types(opts.get("--quant", "none"), dtype)[0]
    return gguf_of_type(source, wanted, find_tool("llama-quantize"))[0]


def cache_bytes(url: str) -> float | None:
    """chatcli serve's chatcli_prompt_cache_bytes (memory the prompt cache may grow to, by design); None elsewhere."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=10).text
        return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                     if s.name == "chatcli_prompt_cache_bytes"), None)
    except (httpx.HTTPError, ValueError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model for the server to load (default: the config's model)")
    ap.add_argument("--url", help="benchmark an already running server at this /v1 URL instead of starting one")
    ap.add_argument("--clients", default="1,4,8,16", help="client counts to run in turn, comma-separated")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of measured load per client count")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds of the same load before measuring")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for both servers")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--compare", choices=["llama-server"], help="then run llama.cpp's llama-server the same way")
    ap.add_argument("--llama-server", type=Path, help="its binary (default: the one bench/build_llama_cpp.py built)")
    ap.add_argument("--gguf", type=Path, help="the GGUF for llama-server (default: the one the model came from)")
    ap.add_argument("--llama-type", help="llama-server's weight type (default: chatcli's bits: int4 Q4_0, int8 Q8_0, "
                    "bfloat16 BF16, float32 F32), made from the source GGUF by llama-quantize when it differs")
    ap.add_argument("--ctx-per-slot", type=int, default=2048, help="llama-server's context per slot (-c = N x this)")
    ap.add_argument("--parallel-per-count", action="store_true",
                    help="start chatcli serve afresh for each client count N with --parallel N, as llama-server gets -np N")
    ap.add_argument("--json", action="store_true", help="print one JSON object per row")
    ap.add_argument("serve_args", nargs="*", help="extra `chatcli serve` options after --")
    args = ap.parse_args()
    counts = [int(n) for n in args.clients.split(",")]

    binary = None
    if args.compare:
        from chatcli.llamacpp import BUILD_HINT, find_tool

        binary = args.llama_server or find_tool("llama-server")
        if binary is None or not binary.exists():
            raise SystemExit(f"no llama-server found; {BUILD_HINT}")

    rows = []
    model_id = None
    groups = [[n] for n in counts] if args.parallel_per_count and not args.url else [counts]
    for group in groups:
        extra = [*args.serve_args, *(["--parallel", str(group[0])] if args.parallel_per_count else [])]
        proc, url = (None, args.url) if args.url else start_chatcli(args.model, args.threads, extra)
        try:
            model_id = openai.OpenAI(base_url=url, api_key=args.api_key).models.list().data[0].id
            for n in group:
                rows.append(measure("chatcli", url, proc.pid if proc else None, n, args))
                print_row(rows[-1], args.json)
        finally:
            if proc is not None:
                stop(proc)
    if binary is not None:
        gguf = args.gguf or peer_gguf(model_id, args.serve_args, args.llama_type)
        for n in counts:
            lproc, lurl = start_llama_server(binary, gguf, n, args.threads, args.ctx_per_slot)
            try:
                rows.append(measure("llama-server", lurl, lproc.pid, n, args) | {"gguf": gguf.name})
                print_row(rows[-1], args.json)
            finally:
                stop(lproc)
    for server in ("chatcli", "llama-server"):
        ttft_bounds([r for r in rows if r["server"] == server], args.json)
    ours = [r for r in rows if r["server"] == "chatcli"]
    # the prompt cache grows by design up to --cache-ram: the 10 % bound is on the rest (the raw growth is printed)
    bad = any(r["errors"] or r["incomplete"] or r.get("rss_growth_net_of_cache_pct", r.get("rss_growth_pct", 0)) > 10
              for r in ours)
    return 1 if bad else 0


def ttft_bounds(rows: list[dict], as_json: bool) -> None:
    """Issue 21's head-of-line target for each row with N > 1 clients: TTFT p95 at most twice one client's p95 plus
    one prefill of the prompts waiting with it, where a prompt's prefill is one lone client's median TTFT (its prefill
    and one step). Needs a 1-client row of the same server."""
    one = next((r for r in rows if r["clients"] == 1), None)
    if one is None:
        return
    for r in rows:
        if r["clients"] > 1:
            bound = 2 * one["ttft_p95_s"] + (r["clients"] - 1) * one["ttft_p50_s"]
            print_row({"server": r["server"], "clients": r["clients"], "ttft_p95_s": r["ttft_p95_s"],
                       "ttft_bound_s": round(bound, 3), "within": r["ttft_p95_s"] <= bound}, as_json)


def print_row(row: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
        return
    print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    sys.exit(main())
