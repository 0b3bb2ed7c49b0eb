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

test: setup-test
	$(VENV)/bin/python -m pytest -q

bench: setup
	$(VENV)/bin/chatcli bench --compare transformers

lint: setup-test
	$(VENV)/bin/python -m ruff check chatcli tests || true

clean:
	rm -rf $(VENV) build *.egg-info
