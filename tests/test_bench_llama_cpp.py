"""`chatcli bench --compare llama_cpp` without llama-cpp-python: it finds a llama-bench binary, matches chatcli's
weight bits with a GGUF of the right type (requantized once by llama-quantize), and reports llama-bench's own figures
beside ours (issue 22).

The real llama-bench takes about 7 minutes of both cores to build (bench/build_llama_cpp.py), too long for the
suite, so these tests run stand-ins: two small Python programs named llama-bench and llama-quantize that take the real
ones' arguments, log them, and answer in llama-bench's `-o json` format. The GGUF, the import, chatcli's own
measurement and the report are real. A real build, where one is found, is run by the last test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.storefakes import make_gguf

CHATCLI = str(Path(sys.executable).parent / "chatcli")

STANDIN_BENCH = f"""#!{sys.executable}
# Stand-in for llama.cpp's llama-bench (see the test module's docstring): logs its argv, answers in its JSON format.
import json, os, sys
args = sys.argv[1:]
with open(os.path.join(os.path.dirname(__file__), "calls.jsonl"), "a") as log:
    log.write(json.dumps(["llama-bench", *args]) + "\\n")
if os.environ.get("STANDIN_FAIL"):
    print("error: failed to load model", file=sys.stderr)
    sys.exit(1)
opt = dict(zip(args[::2], args[1::2]))
runs = int(opt["-r"])
rows = [{{"build_commit": "standin", "build_number": 1, "model_type": "llama ?B", "n_prompt": int(opt["-p"]), "n_gen": 0,
         "n_threads": int(opt["-t"]), "avg_ts": 500.0, "samples_ts": [400.0 + 100 * i for i in range(runs)]}},
        {{"build_commit": "standin", "build_number": 1, "model_type": "llama ?B", "n_prompt": 0, "n_gen": int(opt["-n"]),
         "n_threads": int(opt["-t"]), "avg_ts": 50.0, "samples_ts": [40.0 + 10 * i for i in range(runs)]}}]
print("[")
print(",\\n".join(json.dumps(r) for r in rows))
print("]")
"""

STANDIN_QUANTIZE = f"""#!{sys.executable}
# Stand-in for llama.cpp's llama-quantize: logs its argv and copies the GGUF (the bytes do not matter to a stand-in bench).
import json, os, shutil, sys
with open(os.path.join(os.path.dirname(__file__), "calls.jsonl"), "a") as log:
    log.write(json.dumps(["llama-quantize", *sys.argv[1:]]) + "\\n")
shutil.copyfile(sys.argv[-3], sys.argv[-2])
"""


@pytest.fixture
def standins(tmp_path) -> Path:
    folder = tmp_path / "llama.cpp-bin"
    folder.mkdir()
    for name, text in (("llama-bench", STANDIN_BENCH), ("llama-quantize", STANDIN_QUANTIZE)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def calls(folder: Path) -> list[list[str]]:
    log = folder / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def imported(tmp_path, _isolated_home) -> tuple[str, Path]:
    """A tiny Q8_0 GGUF imported into the store: the model's source GGUF is the imported file."""
    src = tmp_path / "tiny.Q8_0.gguf"
    make_gguf(src, qtype="Q8_0")
    proc = subprocess.run([CHATCLI, "import", str(src), "--name", "tiny"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return "tiny", src


def bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [CHATCLI, "bench", "--runs", "2", "--prompt-tokens", "16", "--new-tokens", "4", "--threads", "1",
           "--compile", "off", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1", **(env or {})})


def test_int4_against_q4_0_and_q4_1_requantized_once(imported, standins):
    name, src = imported
    env = {"CHATCLI_LLAMA_CPP": str(standins)}
    out = bench("--model", name, "--quant", "int4", "--compare", "llama_cpp", "--json", env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report["compare"]) == {"llama_cpp Q4_0", "llama_cpp Q4_1"}
    for wanted in ("Q4_0", "Q4_1"):
        peer = report["compare"][f"llama_cpp {wanted}"]
        assert peer["decode_tps"] == 45.0 and peer["range"]["decode_tps"] == [40.0, 50.0]  # the median of its -r runs
        assert peer["prefill_tps"] == 450.0
        assert peer["weights"] == "requantized from Q8_0 by llama-quantize" and peer["gguf"] == f"tiny.Q8_0.{wanted}.gguf"
        assert peer["ratio"]["decode_tps"] == pytest.approx(report["decode_tps"] / 45.0)
        assert peer["ratio"]["prefill_tps"] == pytest.approx(report["prefill_tps"] / 450.0)
        assert set(peer["ratio"]) == {"decode_tps", "prefill_tps"}  # llama-bench measures nothing else
    quantized = [c for c in calls(standins) if c[0] == "llama-quantize"]
    assert [c[-1] for c in quantized] == ["Q4_0", "Q4_1"] and all(c[2] == str(src.resolve()) for c in quantized)
    benched = [c for c in calls(standins) if c[0] == "llama-bench"]
    assert [Path(c[c.index("-m") + 1]).name for c in benched] == ["tiny.Q8_0.Q4_0.gguf", "tiny.Q8_0.Q4_1.gguf"]
    assert all(c[c.index("-t") + 1] == "1" and c[c.index("-p") + 1] == "16" and c[c.index("-n") + 1] == "4"
               and c[c.index("-r") + 1] == "2" for c in benched)  # the same threads, lengths and runs as ours

    again = bench("--model", name, "--quant", "int4", "--compare", "llama_cpp", env=env)
    assert again.returncode == 0, again.stderr
    assert len([c for c in calls(standins) if c[0] == "llama-quantize"]) == 2  # the requantized files are kept
    assert "llama_cpp Q4_0" in again.stdout and "decode (tok/s)" in again.stdout


def test_int8_runs_a_q8_0_source_as_it_is(imported, standins):
    name, src = imported
    out = bench("--model", name, "--quant", "int8", "--compare", "llama_cpp", "--json", env={"CHATCLI_LLAMA_CPP": str(standins)})
    assert out.returncode == 0, out.stderr
    peer = json.loads(out.stdout)["compare"]["llama_cpp Q8_0"]
    assert peer["weights"] == "source" and peer["decode_tps"] == 45.0
    assert [c[0] for c in calls(standins)] == ["llama-bench"]
    assert calls(standins)[0][2] == str(src.resolve())


def test_no_binary_is_skipped_with_the_way_to_build_one(imported, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = bench("--model", imported[0], "--compare", "llama_cpp", env={"CHATCLI_LLAMA_CPP": str(empty), "PATH": str(Path(CHATCLI).parent)})
    assert out.returncode == 0, out.stderr
    assert "llama_cpp: skipped (no llama-bench binary found; build it once with" in out.stdout
    assert "bench/build_llama_cpp.py" in out.stdout


def test_a_failing_llama_bench_is_reported_not_raised(imported, standins):
    out = bench("--model", imported[0], "--quant", "int8", "--compare", "llama_cpp",
                env={"CHATCLI_LLAMA_CPP": str(standins), "STANDIN_FAIL": "1"})
    assert out.returncode == 0, out.stderr
    assert "llama_cpp Q8_0: failed (llama-bench exited with 1: error: failed to load model)" in out.stdout


def test_weight_types_match_chatcli_bits():
    from chatcli.llamacpp import peer_types

    assert peer_types("none", "float32") == ["F32"] and peer_types("none", "bfloat16") == ["BF16"]
    assert peer_types("int8", "bfloat16") == ["Q8_0"] and peer_types("int4", "float32") == ["Q4_0", "Q4_1"]


def test_the_default_build_is_the_newest_native_one(tmp_path, monkeypatch):
    """A build for another CPU (`build_llama_cpp.py --isa avx2`) is found only where CHATCLI_LLAMA_CPP names it, so an
    AVX2-capped comparison never runs by accident; half-copied folders and the GGUF cache are never builds."""
    from chatcli.llamacpp import builds, llama_cpp_home

    monkeypatch.setenv("CHATCLI_CACHE_DIR", str(tmp_path))
    for name in ("0.3.9", "0.3.36", "0.3.40-avx2", "0.3.41.partial", "gguf"):
        (llama_cpp_home() / name).mkdir(parents=True)
    assert [d.name for d in builds()] == ["0.3.36", "0.3.9"]


def test_file_type_from_the_header_or_the_matrices(tmp_path):
    import gguf

    from chatcli.llamacpp import file_type

    plain = tmp_path / "plain.gguf"
    make_gguf(plain, qtype="Q4_0")  # written without general.file_type: the matrices say it
    assert file_type(plain) == "Q4_0"
    typed = tmp_path / "typed.gguf"
    make_gguf(typed, qtype="Q8_0", extra_kv={"general.file_type": int(gguf.LlamaFileType.MOSTLY_Q4_1)})
    assert file_type(typed) == "Q4_1"


@pytest.mark.skipif(not os.environ.get("CHATCLI_LLAMA_CPP"), reason="no real llama.cpp build named by CHATCLI_LLAMA_CPP")
def test_real_llama_bench_on_the_default_model(smollm2_dir):
    """Where a real build is named (CHATCLI_LLAMA_CPP=.../bin), the whole path runs against it on the pulled model."""
    out = bench("--model", str(smollm2_dir), "--quant", "int8", "--runs", "1", "--compare", "llama_cpp", "--json")
    assert out.returncode == 0, out.stderr
    peer = json.loads(out.stdout)["compare"]["llama_cpp Q8_0"]
    assert peer["decode_tps"] > 0 and peer["prefill_tps"] > 0 and peer["weights"].startswith("requantized from Q4_1")
