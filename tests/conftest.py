"""Shared fixtures. Tiny random models live in tests/tinymodels.py; the real default model in tests/realmodels.py."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.tinymodels", "tests.realmodels", "tests.thinkers"]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own CHATCLI_HOME, data dir and config, so nothing touches the user's files."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("CHATCLI_HOME", str(home))
    monkeypatch.setenv("CHATCLI_CONFIG", str(home / "config.toml"))
    monkeypatch.delenv("CHATCLI_MODELS_DIR", raising=False)
    monkeypatch.delenv("CHATCLI_DATA_DIR", raising=False)
    # pytest-xdist's workers export COLUMNS=80 and LINES=24; a chat in a 100-column pty would then draw 80 columns
    # and cut its toolbar, and a wrapped line would differ from a serial run's.
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
    # A chat under the default `auto` starts a background build of the compiled decode step (a minute of CPU per
    # test home); the tests of that (test_compile_background.py, test_quant_compile.py) ask for it explicitly.
    monkeypatch.setenv("CHATCLI_COMPILE", "off")
    yield home

