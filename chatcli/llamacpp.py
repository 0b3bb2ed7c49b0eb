"""llama.cpp as `chatcli bench`'s peer: its `llama-bench` on the GGUF a model came from, at chatcli's weight bits.

No Python binding is needed: bench/build_llama_cpp.py builds llama-bench (with llama-quantize and llama-server) from
the llama-cpp-python sdist into llama_cpp_home(), and a llama-bench on PATH or in $CHATCLI_LLAMA_CPP does as well.
chatcli's weights are matched by type: float32 against F32, bfloat16 against BF16, float16 against F16, int8 against
Q8_0, int4 against Q4_0 and Q4_1 (ours keeps a scale and a minimum per group, as Q4_1 does; Q4_0 is the usual choice).
A GGUF of another type is made once with llama-quantize from the source GGUF and kept beside the builds; speed does
not depend on the weights' values, so one requantized from a quantized source is as good a peer (the report says so).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

TOOLS = ("llama-bench", "llama-server", "llama-quantize")
BUILD_HINT = "build it once with `.venv/bin/python bench/build_llama_cpp.py` or set CHATCLI_LLAMA_CPP to a folder holding it"


def llama_cpp_home() -> Path:
    """Where bench/build_llama_cpp.py puts llama.cpp builds, one folder per llama-cpp-python version: llama.cpp/ in
    chatcli's cache dir (CHATCLI_CACHE_DIR, else $CHATCLI_HOME/cache, else ~/.cache/chatcli on Linux)."""
    from chatcli.settings import cache_dir

    return cache_dir() / "llama.cpp"


def builds() -> list[Path]:
    """The native llama.cpp builds in llama_cpp_home(), newest llama-cpp-python version first. A build for another
    CPU (VERSION-avx2, `build_llama_cpp.py --isa`) is used only where $CHATCLI_LLAMA_CPP names it."""
    home = llama_cpp_home()
    if not home.is_dir():
        return []
    found = [d for d in home.iterdir()
             if d.is_dir() and not d.name.endswith(".partial") and d.name != "gguf" and "-" not in d.name]
    return sorted(found, key=lambda d: tuple(int(x) if x.isdigit() else -1 for x in d.name.split(".")), reverse=True)


def find_tool(name: str) -> Path | None:
    """A llama.cpp binary: in $CHATCLI_LLAMA_CPP, else the newest build in llama_cpp_home(), else on PATH."""
    folders = [Path(os.environ["CHATCLI_LLAMA_CPP"]).expanduser()] if os.environ.get("CHATCLI_LLAMA_CPP") else []
    folders += [d / "bin" for d in builds()]
    for folder in folders:
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return folder / name
    found = shutil.which(name)
    return Path(found) if found else None


def peer_types(quant: str, dtype: str) -> list[str]:
    """The llama.cpp weight types that match chatcli's QUANT (none/int8/int4) at compute DTYPE."""
    if quant == "int8":
        return ["Q8_0"]
    if quant == "int4":
        return ["Q4_0", "Q4_1"]
    return [{"float32": "F32", "bfloat16": "BF16", "float16": "F16"}.get(dtype, "F32")]


def file_type(gguf: Path) -> str:
    """The GGUF's weight type as llama-quantize names it (F32, BF16, Q8_0, Q4_1, ...): general.file_type, else (a
    writer that left it out) the type most of its matrices have."""
    from collections import Counter

    import gguf as gguf_lib

    reader = gguf_lib.GGUFReader(str(gguf))
    field = reader.get_field("general.file_type")
    if field is not None:
        name = gguf_lib.LlamaFileType(int(field.parts[field.data[0]][0])).name
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    kinds = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2)
    return kinds.most_common(1)[0][0] if kinds else "?"


def gguf_of_type(source: Path, wanted: str, quantize: Path | None) -> tuple[Path, str]:
    """SOURCE itself when it holds WANTED weights, else its requantization (made once); (path, how it was made)."""
    have = file_type(source)
    if have == wanted:
        return source, "source"
    target = llama_cpp_home() / "gguf" / f"{source.stem}.{wanted}.gguf"
    how = f"requantized from {have} by llama-quantize"
    if target.exists():
        return target, how
    if quantize is None:
        raise FileNotFoundError(f"no llama-quantize to make a {wanted} GGUF of {source.name}; {BUILD_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    proc = subprocess.run([str(quantize), "--allow-requantize", str(source), str(partial), wanted],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"llama-quantize {source.name} -> {wanted} failed: {tail}")
    os.replace(partial, target)  # a half-written GGUF is never found as the peer's weights
    return target, how


def _spread(samples: list[float]) -> tuple[float, tuple[float, float]]:
    return statistics.median(samples), (min(samples), max(samples))


def run_llama_bench(binary: Path, gguf: Path, *, prompt_tokens: int, new_tokens: int, threads: int, runs: int,
                    timeout: float = 1800) -> dict:
    """llama-bench's prefill (pp) and decode (tg) on GGUF: medians [min-max] of its RUNS repetitions, in tok/s."""
    cmd = [str(binary), "-m", str(gguf), "-p", str(prompt_tokens), "-n", str(new_tokens), "-t", str(threads),
           "-r", str(runs), "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"llama-bench exited with {proc.returncode}: {tail[:300]}")
    rows = json.loads(proc.stdout[proc.stdout.index("["):])
    out: dict = {"range": {}, "runs": runs, "threads": threads, "gguf": gguf.name}
    for row in rows:
        samples = [float(x) for x in row.get("samples_ts") or [row["avg_ts"]]]
        key = "decode_tps" if int(row.get("n_gen", 0)) > 0 else "prefill_tps"
        out[key], out["range"][key] = _spread(samples)
        out.setdefault("build", f"{row.get('build_commit', '?')} ({row.get('build_number', '?')})")
        out.setdefault("type", row.get("model_type", ""))
    missing = {"decode_tps", "prefill_tps"} - set(out)
    if missing:
        raise RuntimeError(f"llama-bench gave no {', '.join(sorted(missing))} for {gguf.name}")
    return out


def measure(source: Path | None, *, quant: str, dtype: str, prompt_tokens: int, new_tokens: int, threads: int,
            runs: int) -> dict[str, dict]:
    """{peer name: summary or {'skipped': why} or {'error': why}} for each llama.cpp type matching chatcli's weights."""
    if source is None:
        return {"llama_cpp": {"skipped": "the model has no source GGUF in the store (pull or import one)"}}
    binary = find_tool("llama-bench")
    if binary is None:
        return {"llama_cpp": {"skipped": f"no llama-bench binary found; {BUILD_HINT}"}}
    quantize = find_tool("llama-quantize")
    results: dict[str, dict] = {}
    for wanted in peer_types(quant, dtype):
        name = f"llama_cpp {wanted}"
        try:
            gguf, how = gguf_of_type(source, wanted, quantize)
            results[name] = run_llama_bench(binary, gguf, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                                            threads=threads, runs=runs) | {"weights": how, "binary": str(binary)}
        except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            results[name] = {"error": str(e)[:300]}
    return results
