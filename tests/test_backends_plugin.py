"""A third-party backend installed with pip registers through the entry point, exactly like the built-ins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.plugins import PLUGIN_DIR, run_cli


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The echo plugin pip-installed into a temporary site dir (no network: no deps, no build isolation)."""
    target = tmp_path_factory.mktemp("site")
    # setuptools builds in the source tree; a copy keeps the checkout clean
    source = shutil.copytree(PLUGIN_DIR, tmp_path_factory.mktemp("src") / "plugin",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "--no-index", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert list(target.glob("chatcli_echo_plugin-0.1.0.dist-info"))
    return target


def path_with(site) -> str:
    """PYTHONPATH with the plugin's site dir first, keeping what was there (a worktree's checkout under test)."""
    return os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)


def test_listed_with_its_distribution(site):
    r = run_cli("backends", env={"PYTHONPATH": path_with(site)})
    assert r.returncode == 0, r.stderr
    echo = next(line for line in r.stdout.splitlines() if line.startswith("echo"))
    assert echo.split() == ["echo", "chatcli_echo:EchoBackend", "chatcli-echo-plugin", "0.1.0"]
    assert "echo" not in run_cli("backends").stdout.split()  # only where it is installed


def test_ask_uses_the_plugin(site):
    r = run_cli("ask", "--backend", "echo", "--model", "echo-1", "hello", "plugin", env={"PYTHONPATH": path_with(site)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "echo: hello plugin \n"


def test_serve_runs_over_a_plugin_backend_and_warns_off_loopback(site):
    import openai

    from tests.plugins import ServeProcess

    with ServeProcess("--backend", "echo", "--model", "echo-1", "--host", "0.0.0.0", env={"PYTHONPATH": path_with(site)}) as server:
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        reply = openai.OpenAI(base_url=url, api_key="none").chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "over http"}])
        assert reply.choices[0].message.content == "echo: over http "
    assert any("without --api-key" in line for line in server.log)
