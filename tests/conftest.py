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


# The longest files first (their totals in a serial run, 2026-12: 115 s down to 30 s), so that pytest-xdist's
# loadfile scheduling, which hands out files in collection order, does not leave one of them running alone at the
# end while the other worker idles. The rest keep pytest's order.
LONG_FILES = ("test_structured_ask.py", "test_store_real.py", "test_quant_compile.py", "test_compile_background.py",
              "test_tools_repl.py", "test_model_hostile.py", "test_cpu.py", "test_structured_server.py",
              "test_think_ask.py", "test_tool_choice.py", "test_local_tools.py", "test_structured.py",
              "test_quant_real.py", "test_server_tools.py", "test_param_edges.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))
