"""The backend registry: entry points, [backends.NAME] profiles, make_backend, and `chatcli backends`."""

from __future__ import annotations

import json

import pytest

from chatcli.backends.openai import OpenAIBackend
from chatcli.backends.registry import available, backend_class, make_backend, model_for
from chatcli.errors import UsageError
from chatcli.settings import load_settings
from tests.plugins import run_cli

PROFILE = """
model = "smollm2-135m-instruct"

[backends.vllm]
base_url = "http://gpu-box:8000/v1"
model = "meta-llama/Llama-3.1-8B-Instruct"
api_key = "sk-PROFILE-SECRET"
read_timeout = 30

[backends.broken]
base_url = "http://127.0.0.1:1/v1"
colour = "blue"
"""


@pytest.fixture
def config(_isolated_home):
    path = _isolated_home / "config.toml"
    path.write_text(PROFILE)
    return path


def test_builtins_register_as_plugins_do():
    found = available()
    assert found["local"].target == "chatcli.backends.local:LocalBackend" and found["local"].dist == "chatcli"
    assert found["openai"].target == "chatcli.backends.openai:OpenAIBackend"
    assert backend_class("openai") is OpenAIBackend


def test_unknown_backend_suggests_the_closest():
    with pytest.raises(UsageError, match="did you mean 'openai'"):
        make_backend("opnai", load_settings())


def test_a_profile_makes_an_openai_backend(config):
    s = load_settings()
    assert s.sources["model"].startswith("config")  # the file set it: the profile must not override that
    b = make_backend("vllm", s)
    assert isinstance(b, OpenAIBackend) and b.name == "vllm"
    assert b.base_url == "http://gpu-box:8000/v1" and b.read_timeout == 30
    assert s["model"] == "smollm2-135m-instruct"
    assert model_for("vllm", s) == "smollm2-135m-instruct"
    config.write_text(PROFILE.replace('model = "smollm2-135m-instruct"\n', ""))
    s = load_settings()
    make_backend("vllm", s)
    # The profile's model is the one to load, but making the backend leaves the settings as they were read.
    assert model_for("vllm", s) == "meta-llama/Llama-3.1-8B-Instruct"
    assert s["model"] == "smollm2-135m-instruct" and s.sources["model"] == "default"
    s = load_settings().apply_flags(model="mine")
    make_backend("vllm", s, base_url="http://other:1/v1")
    assert model_for("vllm", s) == "mine"  # a flag wins over the profile


def test_flags_and_profile_keys_are_checked(config):
    s = load_settings()
    with pytest.raises(UsageError, match="--base-url does not apply to backend 'local'"):
        make_backend("local", s, base_url="http://x/v1")
    with pytest.raises(UsageError, match=r"\[backends.broken\]: unknown key 'colour'"):
        make_backend("broken", s)
    assert make_backend("openai", s, base_url="http://127.0.0.1:5/v1", api_key=None).base_url == "http://127.0.0.1:5/v1"


def test_an_unknown_key_in_a_local_profile_is_named(_isolated_home):
    """LocalBackend takes only its own keys, so a typo in [backends.local] is an error, not silently ignored."""
    (_isolated_home / "config.toml").write_text('[backends.local]\ndtyp = "float32"\n')
    with pytest.raises(UsageError, match=r"\[backends.local\]: unknown key 'dtyp' for backend 'local'"):
        make_backend("local", load_settings())
    (_isolated_home / "config.toml").write_text('[backends.local]\ndtype = "float32"\nthreads = 1\n')
    b = make_backend("local", load_settings())
    assert b.dtype == "float32" and b.threads == 1


def test_backends_command_lists_plugins_and_profiles_without_keys(config):
    r = run_cli("backends")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TARGET", "SOURCE"]
    assert any(line.split()[:2] == ["local", "chatcli.backends.local:LocalBackend"] and "chatcli 0.1.0" in line for line in lines)
    vllm = next(line for line in lines if line.startswith("vllm"))
    assert "openai -> http://gpu-box:8000/v1" in vllm and "[api key set]" in vllm and str(config) in vllm
    assert "SECRET" not in r.stdout + r.stderr
    rows = [json.loads(line) for line in run_cli("backends", "--json").stdout.splitlines()]
    assert {row["name"] for row in rows} >= {"local", "openai", "vllm", "broken"}
