"""Build llama.cpp's `llama-server` once, from the llama-cpp-python sdist on PyPI, for bench/serve_load.py --compare.

    .venv/bin/python bench/build_llama_server.py            # prints the binary's path (builds it the first time)
    .venv/bin/python bench/build_llama_server.py --version 0.3.36 --jobs 2

A benchmark helper, not a test dependency. The sdist vendors the llama.cpp it binds to (vendor/llama.cpp), so the
version of llama-cpp-python pins the llama.cpp commit being compared against. The binary and its shared libraries land
in the user cache dir (platformdirs: ~/.cache/chatcli/llama-server/VERSION/ on Linux, or $CHATCLI_CACHE_DIR); a
second run finds them and builds nothing. Needs cmake and a C++ compiler; built natively (-march=native) for this CPU,
as llama.cpp's own release builds for a machine are, and without libcurl (the benchmark passes a local GGUF).
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

DEFAULT_VERSION = "0.3.36"  # the newest llama-cpp-python on PyPI when this was written; --version picks another


def cache_root() -> Path:
    """Where built servers live: $CHATCLI_CACHE_DIR/llama-server, else the user cache dir's chatcli/llama-server."""
    env = os.environ.get("CHATCLI_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "llama-server"
    import platformdirs

    return Path(platformdirs.user_cache_dir("chatcli")) / "llama-server"


def binary_path(version: str = DEFAULT_VERSION) -> Path:
    """Where VERSION's llama-server is (or will be) once built."""
    return cache_root() / version / "bin" / "llama-server"


def _run(cmd: list[str], log) -> None:
    print("+ " + " ".join(cmd), file=log, flush=True)
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def build(version: str, jobs: int, log=sys.stderr) -> Path:
    """llama-server of llama-cpp-python VERSION, built into the cache unless it is there; its path."""
    target = binary_path(version)
    if target.exists():
        return target
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise SystemExit(f"build_llama_server: {tool} is not on PATH; install it (apt-get install cmake g++)")
    with tempfile.TemporaryDirectory(prefix="llama-server-build-") as tmp:
        work = Path(tmp)
        _run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
              "-d", str(work), f"llama-cpp-python=={version}"], log)
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"), None)
        if sdist is None:
            raise SystemExit(f"build_llama_server: pip fetched no llama-cpp-python {version} sdist into {work}")
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        out = work / "build"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        _run(["cmake", "-S", str(source), "-B", str(out), *generator, "-DCMAKE_BUILD_TYPE=Release",
              "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
              "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF"], log)
        t0 = time.perf_counter()
        _run(["cmake", "--build", str(out), "--target", "llama-server", "-j", str(jobs)], log)
        print(f"built llama-server in {time.perf_counter() - t0:.0f}s", file=log, flush=True)
        built = next(p for p in (out / "bin" / "llama-server", out / "llama-server") if p.exists())
        # into place atomically: a half-copied binary must never be found by binary_path
        staging = target.parent.with_name(target.parent.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(built, staging / "llama-server")
        staging.rename(target.parent)
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=DEFAULT_VERSION, help="llama-cpp-python version whose llama.cpp to build")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs")
    args = ap.parse_args()
    print(build(args.version, args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
