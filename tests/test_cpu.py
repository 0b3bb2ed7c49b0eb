"""The CPU module (engine/cpu.py): what it reads, how the level is capped, that it is the only reader of the CPU, and
that every kernel path answers on an AVX2-capped run with the same greedy text as the CPU's own kernels (issue 17).

This machine may have AVX-512; the capped runs set ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA, which make torch and
oneDNN run their AVX2 kernels, and CHATCLI_CPU_ISA, which makes chatcli choose as on an AVX2 CPU. fbgemm has no such
switch: under the cap it still runs its own best kernels, so its saturation on a real AVX2 CPU is not reproduced here
(only chatcli's answer to it, 7-bit activations, is exercised).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatcli.engine import cpu

REPO = Path(__file__).resolve().parent.parent
CHATCLI = str(Path(sys.executable).with_name("chatcli"))
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "CHATCLI_CPU_ISA": "avx2"}
UNCAPPED = {k: "" for k in AVX2}  # empty values: the CPU's own level (make test's capped pass sets them)
# chatcli's AVX2 choices (plain bf16 layers, 7-bit fbgemm activations) on this CPU's own kernels: the reference the
# AVX2 kernels must agree with, since they compute the same thing with other instructions.
AVX2_CHOICES = {**UNCAPPED, "CHATCLI_CPU_ISA": "avx2"}


def probe(env: dict) -> dict:
    """The CPU module's view and chatcli's kernel choices in a fresh process under ENV."""
    code = (
        "import json, torch; from chatcli.engine import cpu, linear as L; from chatcli.engine.loader import resolve_dtype\n"
        "c = cpu.info(); d = L.DynamicInt8Linear(torch.nn.Linear(32, 16)) if L.can_dynamic_int8() else None\n"
        "print(json.dumps({**c.as_dict(), 'native_bf16': c.native_bf16, 'pack_bf16': L.can_pack(torch.bfloat16),\n"
        "  'auto': str(resolve_dtype('auto')), 'reduce_range': None if d is None else d.reduce_range,\n"
        "  'int4_block': L.int4_block_n(), 'simdlen': cpu.inductor_simdlen(), 'summary': c.summary, 'fingerprint': cpu.fingerprint()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_reads_this_machine():
    c = cpu.info()
    assert c.model and c.arch and c.level in cpu.LEVELS
    assert c.model in c.summary and c.level in c.summary
    assert cpu.usable_cores() >= 1
    assert cpu.info() is c  # read once


@pytest.mark.spawns
def test_avx2_cap_takes_the_fallbacks():
    """Under the cap no flag above AVX2 is believed, and each choice is the AVX2 one, whatever this machine has."""
    capped = probe(AVX2)
    assert capped["level"] == "avx2" and "CHATCLI_CPU_ISA" in capped["capped_by"]
    assert not any(f.startswith(("avx512", "amx", "avx_vnni", "avx_ne")) for f in capped["flags"])
    assert capped["native_bf16"] is False and capped["pack_bf16"] is False and capped["auto"] == "torch.float32"
    assert capped["reduce_range"] in (True, None)  # None: fbgemm is not in this build
    assert capped["int4_block"] in (32, None)
    assert capped["torch_capability"] == "AVX2"
    # Files built for one level are never taken for another's (compiled steps, stored int4 layouts).
    assert capped["fingerprint"] != probe(UNCAPPED)["fingerprint"] or cpu.info().level == "avx2"


@pytest.mark.spawns
def test_each_library_cap_alone_lowers_the_level():
    """ONEDNN_MAX_CPU_ISA alone is enough for chatcli not to ask oneDNN for bf16 packing it was told not to do."""
    if cpu.info().level != "avx512":
        pytest.skip(f"this CPU has no AVX-512 to cap ({cpu.info().summary})")
    onednn = probe({**UNCAPPED, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert onednn["level"] == "avx2" and onednn["capped_by"] == ["ONEDNN_MAX_CPU_ISA"] and not onednn["pack_bf16"]
    aten = probe({**UNCAPPED, "ATEN_CPU_CAPABILITY": "avx2"})
    assert aten["level"] == "avx2" and aten["capped_by"] == ["ATEN_CPU_CAPABILITY"] and aten["int4_block"] in (32, None)
    assert aten["simdlen"] is None  # inductor follows ATEN_CPU_CAPABILITY by itself
    ours = probe(AVX2_CHOICES)  # torch still dispatches AVX-512: inductor is told to generate AVX2 code
    assert ours["simdlen"] == 256 and ours["torch_capability"] == "AVX512"


def test_only_the_cpu_module_reads_the_cpu():
    """Kernel choices stay in one place: nothing else in chatcli or bench/ reads /proc/cpuinfo or asks torch for its
    capability (a new reader would be a second, possibly different, opinion of the CPU)."""
    pattern = re.compile(r"/proc/cpuinfo|get_cpu_capability|cpu_capability\(|cpuinfo_has|_is_mkldnn_bf16_supported")
    offenders = []
    for path in sorted([*REPO.joinpath("chatcli").rglob("*.py"), *REPO.joinpath("bench").rglob("*.py")]):
        if path == REPO / "chatcli" / "engine" / "cpu.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders


# A prompt whose greedy reply has no near tie in bf16: bf16 rounds differently in each kernel (oneDNN's packed GEMM,
# torch's AVX2 and AVX-512 ones), and on "What is the capital of France?" SmolLM2's bf16 reply under the AVX2 kernels
# began "Le Grand Paris" where the others (and float32 everywhere) say "The capital of France is Paris."
PROMPT = "Name three primary colors."


@pytest.fixture(autouse=True)
def _once(request):
    """These tests set the cap themselves in subprocesses: make test's capped pass need not run them again."""
    if request.node.get_closest_marker("spawns") and cpu.info().capped_by:
        pytest.skip("runs in make test's uncapped pass (it caps its own subprocesses)")


def _ask(smollm2_dir, env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHATCLI, "ask", "--model", str(smollm2_dir), "-t", "0", "--max-tokens", "16", "--no-save", *args, PROMPT]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL,
                          env={**os.environ, **env})


@pytest.mark.slow
@pytest.mark.spawns
@pytest.mark.parametrize("args", [("--dtype", "bfloat16", "--quant", "none"), ("--dtype", "bfloat16", "--quant", "int8"),
                                  ("--dtype", "bfloat16", "--quant", "int4")], ids=["bf16", "int8", "int4"])
def test_every_kernel_path_answers_under_avx2(smollm2_dir, args):
    """The real default model answers on AVX2 kernels with the greedy text of the same settings (and the same
    choices) on this CPU's own kernels, with no traceback; bf16 without oneDNN's packing says once why it runs plain.
    (The AVX2 choices are a computation of their own: 7-bit activations in int4's int8 head gave "The primary colors
    are:\n\nRed, Blue, and Yellow." where 8-bit ones give "...: red, blue, and yellow."; test_quant_real.py holds
    them to the same agreement and perplexity floors in make test's AVX2 pass.)"""
    capped, own = _ask(smollm2_dir, AVX2, *args), _ask(smollm2_dir, AVX2_CHOICES, *args)
    assert capped.returncode == 0 and own.returncode == 0, capped.stderr + own.stderr
    assert "Traceback" not in capped.stderr and capped.stdout.strip()
    assert capped.stdout == own.stdout
    if args[-1] == "none":
        assert [ln for ln in capped.stderr.splitlines() if "oneDNN" in ln] == [capped.stderr.strip()]


@pytest.mark.spawns
def test_compiled_step_answers_under_avx2(tmp_path, tiny_tokenizer_dir):
    """`--compile on` builds the decode step for AVX2 (inductor follows ATEN_CPU_CAPABILITY) and answers with the
    greedy text of the eager engine under the same cap (a tiny model: the build of SmolLM2's took a minute)."""
    from tests.tinymodels import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny-cpu", "llama", tokenizer_dir=tiny_tokenizer_dir, max_position_embeddings=1024)
    env = {**AVX2, "CHATCLI_CACHE_DIR": str(tmp_path / "cache")}
    compiled, eager = (_ask(model, env, "--compile", c, "--dtype", "float32", "--system", "Be brief.") for c in ("on", "off"))
    assert compiled.returncode == 0 and eager.returncode == 0, compiled.stderr + eager.stderr
    assert "Traceback" not in compiled.stderr and "decoding without it" not in compiled.stderr, compiled.stderr
    assert compiled.stdout == eager.stdout and compiled.stdout.strip()
