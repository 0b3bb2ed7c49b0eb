"""chat/ask/config at the command line: help, option names shared with the config file, settings precedence."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from chatcli import settings

CHATCLI = str(Path(sys.executable).with_name("chatcli"))
SAMPLING_FLAGS = ["--temperature", "--top-p", "--top-k", "--min-p", "--repeat-penalty", "--seed", "--max-tokens", "--stop"]


def run(*args: str, stdin: bytes = b"", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CHATCLI, *args], input=stdin, capture_output=True, env={**os.environ, **(env or {})},
                          timeout=120)


def test_help_is_fast_and_names_match_the_config():
    """Sampling flags are the config keys with dashes, the same in chat and ask; help imports no torch."""
    for command in ("chat", "ask"):
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "chatcli", command, "--help"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert not re.search(r"\|\s+torch$", r.stderr, re.M), "help imported torch"
        for flag in SAMPLING_FLAGS:
            assert flag in r.stdout
            key = flag[2:].replace("-", "_")
            assert key in settings.TYPES or key == "stop"
        assert "-t, --temperature" in r.stdout and "--plain" in r.stdout and "--no-save" in r.stdout


def test_config_show_names_each_source(_isolated_home):
    (_isolated_home / "config.toml").write_text('temperature = 0.3\nmodel = "my-model"\n'
                                                '[backends.gpu]\nbase_url = "http://x/v1"\napi_key = "sk-SECRET"\n')
    r = run("config", "show", "--json", env={"CHATCLI_TOP_K": "5"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["settings"]["temperature"] == {"value": 0.3, "source": f"config ({_isolated_home / 'config.toml'})"}
    assert got["settings"]["top_k"] == {"value": 5, "source": "env (CHATCLI_TOP_K)"}
    assert got["settings"]["top_p"]["source"] == "default"
    assert got["backends"]["gpu"]["api_key"] == "***" and b"SECRET" not in r.stdout
    assert got["paths"]["home"] == str(_isolated_home)
    table = run("config", "show")
    assert table.returncode == 0 and b"\x1b" not in table.stdout
    assert re.search(rb"temperature\s+0.3\s+config", table.stdout)
    bad = run("config", "show", env={"CHATCLI_TOP_K": "many"})
    assert bad.returncode == 2 and bad.stderr.decode().startswith("chatcli: error: CHATCLI_TOP_K: top_k must be an integer, got 'many'")


def test_precedence_in_the_chat(tiny_llama_dir, _isolated_home):
    """Prompt file < config file < CHATCLI_* < flags < /set, and /set shows where each value came from."""
    (_isolated_home / "config.toml").write_text("temperature = 0.3\nmin_p = 0.05\n")
    script = b"/set\n/set min_p 0.1\n/set\n"
    r = run("chat", "--model", str(tiny_llama_dir), "--seed", "7", "--min-p", "0.2", "--stop", "###", stdin=script,
            env={"CHATCLI_TOP_K": "5"})
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.decode().split("min_p = 0.1\n")
    rows = dict(line.split("\t", 1) for line in first.splitlines()[1:])
    assert rows["temperature"] == f"0.3\tconfig ({_isolated_home / 'config.toml'})"
    assert rows["top_p"] == "0.95\tprompt default"  # the shipped default prompt sets it
    assert rows["top_k"] == "5\tenv (CHATCLI_TOP_K)"
    assert rows["min_p"] == "0.2\tflag" and rows["seed"] == "7\tflag" and rows["stop"] == "'###'\tflag"
    assert rows["max_tokens"] == "1024\tdefault"
    assert "min_p\t0.1\t/set" in second


def test_bad_flag_values_exit_2(tiny_llama_dir):
    # The word-valued flags are Typer choices: click names the flag and lists the words.
    for args, message in [(["--dtype", "float16"], "'float16' is not one of 'auto', 'float32', 'bfloat16'"),
                          (["--context-policy", "yolo"], "'yolo' is not one of 'drop-oldest', 'error'"),
                          (["--quant", "int3"], "'int3' is not one of 'none', 'int8', 'int4'"),
                          (["--compile", "yes"], "'yes' is not one of 'auto', 'on', 'off'"),
                          (["--repeat-penalty", "0"], "repeat_penalty must be > 0"),
                          (["--continue", "--resume", "3"], "give one")]:
        r = run("chat", "--model", str(tiny_llama_dir), *args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr.decode()


def test_unknown_options_and_commands_exit_2_without_a_traceback():
    """typer 0.29 raises its vendored click's exceptions, not click's: both must end as a usage message and exit 2."""
    for args, message in [(["ask", "--no-such-flag", "hi"], "No such option: --no-such-flag"),
                          (["no-such-command"], "No such command"),
                          (["history", "export"], "Missing argument")]:
        r = run(*args)
        err = r.stderr.decode()
        assert r.returncode == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)


def test_ask_saves_and_chat_continues_it(tiny_llama_dir):
    common = ["--model", str(tiny_llama_dir), "-t", "0", "--max-tokens", "3", "--system", "Be brief."]
    first = run("ask", *common, "remember the word pelican", stdin=b"")
    assert first.returncode == 0, first.stderr
    r = run("chat", *common, "--continue", stdin=b"/transcript\n/history\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "user:\nremember the word pelican" in out and "assistant" in out
    assert re.search(r"^1\tremember the word pelican\t", out, re.M)
    missing = run("chat", *common, "--resume", "99", stdin=b"")
    assert missing.returncode != 0 and "99" in missing.stderr.decode()


def test_the_choice_words_match_the_engine():
    """settings.CHOICES feeds the Typer choices (no torch at --help); the engine keeps its own tuples, kept equal here."""
    from chatcli.engine import compile as compiling
    from chatcli.engine.quant import MODES

    assert settings.CHOICES["quant"] == MODES and settings.CHOICES["compile"] == compiling.MODES
    from chatcli.session import POLICIES

    assert settings.CHOICES["context_policy"] == POLICIES


def test_serve_takes_the_same_choice_words():
    for args, message in [(["--quant", "int3"], "'int3' is not one of 'none', 'int8', 'int4'"),
                          (["--dtype", "float16"], "'float16' is not one of 'auto', 'float32', 'bfloat16'"),
                          (["--compile", "yes"], "'yes' is not one of 'auto', 'on', 'off'")]:
        r = run("serve", "--port", "0", *args)
        assert r.returncode == 2 and message in r.stderr.decode(), (args, r.stderr)
