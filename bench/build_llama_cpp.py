"""Build llama.cpp's `llama-bench`, `llama-server` and `llama-quantize` once, from the llama-cpp-python sdist on PyPI.

    .venv/bin/python bench/build_llama_cpp.py            # prints the bin folder (builds it the first time)
    .venv/bin/python bench/build_llama_cpp.py --version 0.3.36 --jobs 2
    .venv/bin/python bench/build_llama_cpp.py --isa avx2   # an AVX2-only build, into VERSION-avx2

A benchmark helper, not a test dependency: `chatcli bench --compare llama_cpp` runs the llama-bench it builds, and
bench/serve_load.py --compare llama-server its server. The sdist vendors the llama.cpp it binds to (vendor/llama.cpp),
so the version of llama-cpp-python pins the llama.cpp commit being compared against. Beside the binaries it keeps that
commit's convert_hf_to_gguf.py with gguf-py and conversion/, which bench/make_1b.py uses to turn a safetensors folder into a GGUF.
Everything lands in chatcli.llamacpp.llama_cpp_home()/VERSION ($CHATCLI_CACHE_DIR/llama.cpp, else
~/.cache/chatcli/llama.cpp on Linux); a second run finds it and builds nothing. Needs cmake and a C++ compiler; built
natively (GGML_NATIVE, -march=native) for this CPU, as a user building llama.cpp on their machine gets it, without
libcurl (every benchmark passes a local GGUF), and statically linked so the binaries can be moved.

`--isa avx2` builds for an AVX2 CPU (Zen 3, Haswell to Comet Lake: AVX2, FMA, F16C, BMI2, nothing of AVX-512 or
AVX-VNNI) into VERSION-avx2, so an AVX-512 machine can compare against llama.cpp as such a CPU runs it, beside
chatcli capped the same way (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 CHATCLI_CPU_ISA=avx2). The native
build stays the one found by default; point CHATCLI_LLAMA_CPP at VERSION-avx2/bin to use this one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chatcli.llamacpp import TOOLS, llama_cpp_home  # noqa: E402

DEFAULT_VERSION = "0.3.36"  # the newest llama-cpp-python on PyPI when this was written; --version picks another
# ggml's x86 feature switches, by what the build may use; GGML_NATIVE must be off for them to count
ISAS = {
    "native": ["-DGGML_NATIVE=ON"],
    "avx2": ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON",
             "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF", "-DGGML_AVX512_VBMI=OFF", "-DGGML_AVX512_VNNI=OFF",
             "-DGGML_AVX512_BF16=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"],
}


def build_dir(version: str = DEFAULT_VERSION, isa: str = "native") -> Path:
    """VERSION's folder (VERSION-ISA but for the native build): bin/ (the binaries) and convert/
    (convert_hf_to_gguf.py with its gguf-py)."""
    return llama_cpp_home() / (version if isa == "native" else f"{version}-{isa}")


def _run(cmd: list[str], log) -> None:
    print("+ " + " ".join(cmd), file=log, flush=True)
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def build(version: str, jobs: int, log=sys.stderr, isa: str = "native") -> Path:
    """VERSION's llama.cpp tools for ISA, built into the cache unless they are there; the folder."""
    target = build_dir(version, isa)
    if all((target / "bin" / tool).exists() for tool in TOOLS):
        return target
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise SystemExit(f"build_llama_cpp: {tool} is not on PATH; install it (apt-get install cmake g++)")
    with tempfile.TemporaryDirectory(prefix="llama-cpp-build-") as tmp:
        work = Path(tmp)
        _run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
              "-d", str(work), f"llama-cpp-python=={version}"], log)
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"), None)
        if sdist is None:
            raise SystemExit(f"build_llama_cpp: pip fetched no llama-cpp-python {version} sdist into {work}")
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        out = work / "build"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        _run(["cmake", "-S", str(source), "-B", str(out), *generator, "-DCMAKE_BUILD_TYPE=Release",
              "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
              "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", *ISAS[isa], "-DBUILD_SHARED_LIBS=OFF"], log)
        t0 = time.perf_counter()
        _run(["cmake", "--build", str(out), "--target", *TOOLS, "-j", str(jobs)], log)
        print(f"built {', '.join(TOOLS)} in {time.perf_counter() - t0:.0f}s", file=log, flush=True)
        # into place by one rename: a half-copied folder must never be found by chatcli.llamacpp.find_tool
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        for tool in TOOLS:
            built = next(p for p in (out / "bin" / tool, out / tool) if p.exists())
            shutil.copy2(built, staging / "bin" / tool)
        (staging / "convert").mkdir()
        shutil.copy2(source / "convert_hf_to_gguf.py", staging / "convert" / "convert_hf_to_gguf.py")
        for package in ("gguf-py", "conversion"):  # the converter's own gguf and (newer llama.cpp) its model classes
            if (source / package).is_dir():
                shutil.copytree(source / package, staging / "convert" / package)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=DEFAULT_VERSION, help="llama-cpp-python version whose llama.cpp to build")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs")
    ap.add_argument("--isa", choices=sorted(ISAS), default="native",
                    help="the instructions the build may use: native (this CPU's) or avx2 (an AVX2-only CPU's)")
    args = ap.parse_args()
    print(build(args.version, args.jobs, isa=args.isa) / "bin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
