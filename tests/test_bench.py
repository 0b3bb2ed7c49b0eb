"""`chatcli bench` through the console script on a tiny model: the fields, the comparison and its ratios (issue 6).
Speed itself is never asserted here; only that every figure is measured and reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHATCLI = str(Path(sys.executable).parent / "chatcli")
FIELDS = ("load_s", "ttft_s", "prefill_tps", "decode_tps", "turn2_ttft_s", "peak_rss_mb")


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [CHATCLI, "bench", "--runs", "1", "--prompt-tokens", "16", "--new-tokens", "4", "--threads", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "NO_COLOR": "1"})


def test_json_report_with_transformers(tiny_llama_dir):
    pytest.importorskip("transformers")
    out = bench("--model", str(tiny_llama_dir), "--compare", "transformers", "--compare", "llama_cpp", "--json", "--compile", "auto")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for key in FIELDS:
        assert report[key] > 0, key
        assert report["compare"]["transformers"][key] > 0, key
    assert report["turn2_cached_tokens"] > 0  # the second turn reused the conversation
    assert report["threads"] == 1 and report["dtype"] in ("float32", "bfloat16")
    assert report["compile"] == "auto" and report["compiled"] == "eager"  # auto with no stored step: says so
    assert report["cold_ask_s"] > 0  # chatcli only: a fresh `chatcli ask` to its first byte
    from chatcli.engine import cpu

    assert report["cpu"]["model"] == cpu.info().model and report["cpu"]["level"] in cpu.LEVELS  # which CPU measured
    ratio = report["compare"]["transformers"]["ratio"]
    assert set(ratio) == set(FIELDS)
    assert ratio["decode_tps"] == pytest.approx(report["decode_tps"] / report["compare"]["transformers"]["decode_tps"])
    assert ratio["ttft_s"] == pytest.approx(report["compare"]["transformers"]["ttft_s"] / report["ttft_s"])
    llama = report["compare"]["llama_cpp"]
    assert "skipped" in llama or llama.get("decode_tps")  # measured where llama-cpp-python is installed


def test_table_report_int4(tiny_llama_dir):
    out = bench("--model", str(tiny_llama_dir), "--quant", "int4", "--dtype", "bfloat16", "--compile", "auto")
    assert out.returncode == 0, out.stderr
    assert "decode (tok/s)" in out.stdout and "quant int4" in out.stdout and "\x1b[" not in out.stdout
    assert "compile auto (eager)" in out.stdout
    assert "CPU: " in out.stdout and "level " in out.stdout


def test_missing_model_is_one_line_error(tmp_path):
    out = bench("--model", str(tmp_path / "nothing-here"))
    assert out.returncode != 0
    assert out.stderr.startswith("chatcli: error:") and "Traceback" not in out.stderr


def test_default_threads_within_the_machine():
    from chatcli.backends.local import default_threads

    assert 1 <= default_threads() <= (os.cpu_count() or 1)


def test_attention_floor_script(tiny_llama_dir):
    """bench/attention_floor.py (the second turn's floor on this machine, issue 6) runs and reports every line."""
    script = Path(__file__).resolve().parents[1] / "bench" / "attention_floor.py"
    out = subprocess.run([sys.executable, str(script), "--model", str(tiny_llama_dir), "--dtype", "float32",
                          "--threads", "1", "--context", "40", "--new", "8", "--runs", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for line in ("alone", "turn2", "gemm", "softmax", "ratio now", "floor with these GEMMs", "budget for a ratio"):
        assert line in out.stdout, line
