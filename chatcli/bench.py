"""`chatcli bench`: load time, time to first token, prefill and decode speed, second-turn latency and peak memory.

Every run of every engine happens in a fresh child process (`python -m chatcli.bench ENGINE JSON`), so load time is
a real cold-ish load (the file may be in the page cache) and peak RSS is that engine's alone. Each figure is reported
as the median of the runs with its min and max. Speed is what this machine does now: the CPU time other processes
took meanwhile is printed next to the figures, because two cores busy with something else halve them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

FIELDS = ("load_s", "ttft_s", "prefill_tps", "decode_tps", "turn2_ttft_s", "peak_rss_mb", "cold_ask_s")
HIGHER_IS_BETTER = {"prefill_tps", "decode_tps"}
TURN2_CONTEXT = 1000  # tokens of conversation before the second turn
TURN2_MESSAGE = "Thank you. Now summarise all of that in one short sentence, please."
COLD_QUESTION = "What is the capital of France?"
# Plain prose to cut prompts from (written for chatcli; CC0). Repeated as needed: the content does not change speed.
TEXT = (
    "The lighthouse keeper climbed the spiral stairs each evening before the sun touched the water. He wound the "
    "clockwork that turned the great lens, trimmed the wick, and wrote the weather in a ledger that nobody read. "
    "Ships passed far out, their lights small as sparks, and on clear nights he counted them the way other people "
    "count sheep. In winter the gales threw spray against the glass and the tower hummed like a struck bell. In "
    "summer the island filled with birds that argued from dawn until dark. He kept a garden of stubborn cabbages in "
    "the lee of the wall, mended his own boots, and read the same twelve books until their spines went soft. When "
    "the supply boat came he traded letters with a sister who lived inland and had never seen the sea. "
)


def prompt_ids(tokenizer, n: int) -> list[int]:
    """Exactly N token ids of plain prose."""
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(TEXT)
    return ids[:n]


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed_generation(step, n_new: int) -> tuple[float, float]:
    """(seconds to the first token, decode tokens per second after it) from a (token, logits) generator."""
    t0 = time.perf_counter()
    next(step)
    t1 = time.perf_counter()
    for _ in range(n_new - 1):
        next(step)
    t2 = time.perf_counter()
    step.close()
    return t1 - t0, (n_new - 1) / (t2 - t1) if n_new > 1 else 0.0


# -- workers (run in the child process) -------------------------------------------------------------------------------
def worker_local(a: dict) -> dict:
    """One run of chatcli's engine through the local backend."""
    import torch

    from chatcli.backends.local import LocalBackend
    from chatcli.engine import cpu
    from chatcli.engine.generate import generate_step
    from chatcli.engine.sampling import make_sampler
    from chatcli.types import Message, SamplingParams

    t0 = time.perf_counter()
    backend = LocalBackend(dtype=a["dtype"], quant=a["quant"], compile=a["compile"], threads=a["threads"])
    backend.load(a["model"])
    load_s = time.perf_counter() - t0
    model, greedy = backend.model, make_sampler(temperature=0)
    ids = prompt_ids(backend.tokenizer, a["prompt_tokens"])
    _timed_generation(generate_step(model, ids[:16], sampler=greedy), 4)  # warm-up: first-call costs of the kernels
    ttft, decode = _timed_generation(generate_step(model, ids, sampler=greedy), a["new_tokens"])

    # Second turn: a ~1000-token conversation, then a short new message; the backend reuses the cached prefix.
    system = Message("system", "You are a helpful assistant.")
    text = backend.tokenizer.decode(prompt_ids(backend.tokenizer, a["turn2_context"] - 40))
    history = [system, Message("user", text)]
    params = SamplingParams(temperature=0.0, max_tokens=16)
    reply = "".join(c.text for c in backend.stream_chat(history, params))
    history += [Message("assistant", reply), Message("user", TURN2_MESSAGE)]
    stats = [c.stats for c in backend.stream_chat(history, params) if c.stats is not None][-1]
    new = stats.prompt_tokens - stats.cached_tokens
    alone, _ = _timed_generation(generate_step(model, ids[:new], sampler=greedy), 1)
    return {
        "load_s": load_s, "ttft_s": ttft, "prefill_tps": a["prompt_tokens"] / ttft, "decode_tps": decode,
        "turn2_ttft_s": stats.ttft_s, "turn2_prompt_tokens": stats.prompt_tokens, "turn2_cached_tokens": stats.cached_tokens,
        "turn2_alone_s": alone, "peak_rss_mb": _peak_rss_mb(), "dtype": str(model.compute_dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "compiled": backend.compiled,
        # Which CPU, and the level its kernels were chosen for: figures from two CPUs are never to be compared.
        "cpu": {**cpu.info().as_dict(), "summary": cpu.info().summary},
        # int8/int4 weights read from `chatcli models quantize`'s file, or quantized as the model loaded
        "quantized": "stored" if getattr(model, "quantized_from", None) else ("at load" if a["quant"] != "none" else ""),
    }


def worker_transformers(a: dict) -> dict:
    """One run of Hugging Face transformers on the same folder, same dtype, same prompt, greedy, its own KV cache."""
    import torch

    from chatcli.optional import require

    AutoModelForCausalLM = require("transformers", "bench --compare transformers", "compare").AutoModelForCausalLM

    from chatcli.engine.loader import resolve_dtype
    from chatcli.engine.tokenizer import load_tokenizer

    if a["threads"]:
        torch.set_num_threads(a["threads"])
    dtype = resolve_dtype(a["dtype"])
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=dtype).eval()
    load_s = time.perf_counter() - t0
    tok = load_tokenizer(a["model"])
    ids = prompt_ids(tok, a["prompt_tokens"])

    def steps(prompt: list[int]):
        with torch.inference_mode():
            out = model(torch.tensor([prompt]), use_cache=True)
            while True:
                token = int(out.logits[0, -1].argmax())
                yield token, None
                out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)

    _timed_generation(steps(ids[:16]), 4)
    ttft, decode = _timed_generation(steps(ids), a["new_tokens"])
    # transformers keeps no cache between calls: its second turn prefills the whole conversation again.
    turn2, _ = _timed_generation(steps(prompt_ids(tok, a["turn2_context"] + 20)), 1)
    return {"load_s": load_s, "ttft_s": ttft, "prefill_tps": a["prompt_tokens"] / ttft, "decode_tps": decode,
            "turn2_ttft_s": turn2, "peak_rss_mb": _peak_rss_mb(), "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads()}


WORKERS = {"chatcli": worker_local, "transformers": worker_transformers}


# -- the parent -------------------------------------------------------------------------------------------------------
@dataclass
class EngineResult:
    """The runs of one engine and their summary."""

    engine: str
    runs: list[dict] = field(default_factory=list)
    error: str | None = None

    def median(self, key: str) -> float | None:
        vals = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def span(self, key: str) -> tuple[float, float] | None:
        vals = [r[key] for r in self.runs if r.get(key) is not None]
        return (min(vals), max(vals)) if vals else None

    def summary(self) -> dict:
        out: dict = {k: self.median(k) for k in FIELDS}
        out["range"] = {k: self.span(k) for k in FIELDS if self.span(k)}
        extra = [k for k in (self.runs[0] if self.runs else {}) if k not in FIELDS]
        out.update({k: self.median(k) if isinstance(self.runs[0][k], (int, float)) else self.runs[0][k] for k in extra})
        out["runs"] = len(self.runs)
        if self.error:
            out["error"] = self.error
        return out


def run_engine(engine: str, args: dict, runs: int, timeout: float = 900) -> EngineResult:
    """RUNS fresh child processes of ENGINE; a failure is recorded, not raised (a peer may be missing)."""
    result = EngineResult(engine)
    for _ in range(runs):
        cmd = [sys.executable, "-m", "chatcli.bench", engine, json.dumps(args)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            result.error = f"timed out after {timeout:.0f} s"
            break
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            result.error = tail[:300]
            break
        result.runs.append(json.loads(lines[-1]))
    return result


def cold_ask(args: dict, runs: int, timeout: float = 300) -> list[float]:
    """Seconds from starting `chatcli ask` in a new interpreter to the first byte of its answer, once per run: what a
    user waits for in a one-shot question (interpreter, imports, loading, prompt, prefill, first token)."""
    import tempfile

    cmd = [sys.executable, "-m", "chatcli", "ask", "--model", args["model"], "--dtype", args["dtype"], "--quant", args["quant"],
           "--temperature", "0", "--max-tokens", "1", "--no-save", "--plain", COLD_QUESTION]
    times = []
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-") as data:
        env = {**os.environ, "CHATCLI_DATA_DIR": data, "CHATCLI_THREADS": str(args["threads"]), "CHATCLI_COMPILE": args["compile"]}
        for _ in range(runs):
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            first = proc.stdout.read(1)
            t1 = time.perf_counter()
            try:
                proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                break
            if proc.returncode != 0 or not first:
                break
            times.append(t1 - t0)
    return times


def source_gguf(model_dir: Path) -> Path | None:
    """The GGUF a model came from, if it is still there: a pull's copy in models/.cache (NAME-SHA12.gguf), or the
    file an `chatcli import` named."""
    try:
        meta = json.loads((model_dir / "chatcli.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    imported = Path(str(meta.get("source_file", "")))
    if imported.suffix.lower() == ".gguf" and imported.is_file():
        return imported
    sha = str(meta.get("sha256", ""))[:12]
    cache = model_dir.parent / ".cache"
    found = sorted(cache.glob(f"*{sha}.gguf")) if sha and cache.is_dir() else []
    return found[0] if found else None


def ratios(ours: dict, theirs: dict) -> dict:
    """ours / theirs for speeds, theirs / ours for times and memory: above 1 means chatcli is better."""
    out = {}
    for k in FIELDS:
        a, b = ours.get(k), theirs.get(k)
        if a and b:
            out[k] = a / b if k in HIGHER_IS_BETTER else b / a
    return out


def bench(model_dir: Path, *, prompt_tokens: int = 128, new_tokens: int = 128, runs: int = 3, dtype: str = "auto",
          quant: str = "none", compile: str = "auto", threads: int = 0, compare: tuple[str, ...] = ()) -> dict:
    """Benchmark chatcli (and the peers in COMPARE) on MODEL_DIR; return the report as one JSON-able object."""
    if not threads:  # decided once, so every run and every engine gets the same count
        from chatcli.backends.local import default_threads

        threads = default_threads()
    args = {"model": str(model_dir), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "dtype": dtype,
            "quant": quant, "compile": compile, "threads": threads, "turn2_context": _turn2_context(model_dir)}
    from chatcli.backends.cpuload import Window

    window = Window()  # what other work took of the CPUs while this ran: the figures are only as good as that
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    ours = run_engine("chatcli", args, runs)
    if ours.error and not ours.runs:
        from chatcli.errors import BackendError

        raise BackendError(f"bench: chatcli's engine failed on {model_dir}: {ours.error}")
    for run, seconds in zip(ours.runs, cold_ask(args, len(ours.runs))):
        run["cold_ask_s"] = seconds
    report = {"model": str(model_dir), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "quant": quant,
              "compile": compile, **ours.summary(), "compare": {}}
    for peer in compare:
        if peer == "llama_cpp":  # llama-bench, one peer per matching weight type ("llama_cpp Q4_0", ...)
            from chatcli import llamacpp

            found = llamacpp.measure(source_gguf(model_dir), quant=quant, dtype=str(report.get("dtype")),
                                     prompt_tokens=prompt_tokens, new_tokens=new_tokens, threads=threads, runs=runs)
            for name, summary in found.items():
                if "decode_tps" in summary:
                    summary["ratio"] = ratios(report, summary)
                report["compare"][name] = summary
            continue
        res = run_engine(peer, dict(args, quant="none"), runs)
        summary = res.summary()
        summary["ratio"] = ratios(report, summary)
        report["compare"][peer] = summary
    report["load_average"] = [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]
    report["other_busy_cores"] = window.other_busy_cores()
    report["cpus"] = os.cpu_count()
    return report


def _turn2_context(model_dir: Path) -> int:
    """TURN2_CONTEXT tokens, or half the model's context when that is smaller (tiny test models)."""
    try:
        ctx = int(json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings", 0))
    except (OSError, ValueError, TypeError):
        ctx = 0
    return min(TURN2_CONTEXT, ctx // 2) if ctx else TURN2_CONTEXT


def main(argv: list[str]) -> int:
    """Child-process entry: `python -m chatcli.bench ENGINE JSON-ARGS` prints one JSON line."""
    engine, args = argv[0], json.loads(argv[1])
    print(json.dumps(WORKERS[engine](args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
