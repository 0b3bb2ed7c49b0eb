# The two commands a newcomer needs: `make chat` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The checkout is the store: models/ and prompts/ live here when run through make.
export CHATCLI_HOME ?= $(CURDIR)
# torch is pinned to the CPU build that pip finds locally; a bare `torch` pulls a CUDA build of several GB.
TORCH := torch==2.13.0

.PHONY: chat test setup setup-test bench lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet $(TORCH) -e '.[test]'
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test

chat: setup
	$(VENV)/bin/chatcli chat

# The kernel-choice and quantization tests again with torch, oneDNN and chatcli capped at AVX2 (engine/cpu.py), so
# an AVX-512 or AMX machine also checks the paths most laptops take. fbgemm cannot be capped (see tests/test_cpu.py).
AVX2_CAP := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 CHATCLI_CPU_ISA=avx2
AVX2_TESTS := tests/test_cpu.py tests/test_quant.py tests/test_quant_real.py tests/test_quantstore.py tests/test_engine_parity.py

# Two pytest workers, one torch thread each: most tests wait on a subprocess, a pty or a model load and use one core
# or less, so two workers fill the machine; torch's default of a thread per core in each would oversubscribe it.
# Tests that choose their own thread count still do. --dist loadfile keeps a file's module fixtures in one worker.
PYTEST := OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -q -n 2 --dist loadfile

test: setup-test
	$(VENV)/bin/python -m ruff check chatcli tests bench
	$(PYTEST)
	$(AVX2_CAP) $(PYTEST) $(AVX2_TESTS)

bench: setup
	$(PY) -m pip install --quiet $(TORCH) -e '.[compare]'
	$(VENV)/bin/chatcli bench --compare transformers

lint: setup-test
	$(VENV)/bin/python -m ruff check chatcli tests bench

clean:
	rm -rf $(VENV) build *.egg-info
