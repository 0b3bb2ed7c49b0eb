"""Prompt files: the shipped prompts, user overrides, variables, and one clear FILE:LINE error for each kind of bad file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chatcli import prompts, settings
from chatcli.errors import LoadError, UsageError
from chatcli.prompts import list_prompts, load_prompt, parse_variables, render_system

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {"default", "concise", "coder", "explain", "classic"}


def write(name: str, text: str | bytes) -> Path:
    folder = settings.prompts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_shipped_prompts_load_and_render():
    found = {p.name: p for p in list_prompts()}
    assert SHIPPED <= set(found)
    for name in SHIPPED:
        p = found[name]
        assert p.packaged and p.description
        text = render_system(p, {}, model="tiny")
        assert text and "{{" not in text
    assert found["coder"].params["temperature"] == 0.2
    assert found["classic"].template == "classic"
    assert render_system(found["classic"]).startswith("What follows is a conversation between a user and a helpful AI assistant:")


def test_packaged_prompts_are_the_checkout_prompts():
    link = REPO / "chatcli" / "data" / "prompts"
    assert link.is_symlink() and os.readlink(link) == "../../prompts"
    assert {p.stem for p in prompts.PACKAGED.glob("*.md")} == {p.stem for p in (REPO / "prompts").glob("*.md")}


def test_wheel_contains_the_prompts(tmp_path):
    # Build from a copy so the shared checkout gets no build/ or egg-info folders.
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "chatcli", "pyproject.toml"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    shipped = [str(p.relative_to(REPO)) for p in (REPO / "prompts").glob("*.md")]
    for rel in dict.fromkeys(files + shipped + ["chatcli/data/prompts"]):
        target, origin = src / rel, REPO / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            target.symlink_to(os.readlink(origin))
        elif origin.is_file():
            target.write_bytes(origin.read_bytes())
    (src / "README.md").write_text("x")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w", "dist"],
                   cwd=src, check=True, capture_output=True)
    names = zipfile.ZipFile(next((src / "dist").glob("*.whl"))).namelist()
    assert {f"chatcli/data/prompts/{n}.md" for n in SHIPPED} <= set(names)


def test_user_file_overrides_packaged_and_adds_new():
    write("default", "---\ndescription: mine\ntemperature: 0.1\n---\nMy own system prompt.\n")
    write("pirate", "Talk like a pirate.")
    p = load_prompt("default")
    assert not p.packaged and p.description == "mine" and p.params == {"temperature": 0.1}
    assert render_system(p) == "My own system prompt."
    assert "pirate" in {q.name for q in list_prompts()}
    assert load_prompt("pirate").body.strip() == "Talk like a pirate."


def test_variables_builtins_defaults_and_overrides():
    path = write("v", "---\nvariables:\n  who: world\n---\nHi {{ who }} on {{ os }}, {{ model }}, {{ date }} {{ time }} in {{ cwd }}\n")
    p = load_prompt("v")
    text = render_system(p, {}, model="m1")
    assert re.fullmatch(r"Hi world on \w+, m1, \d{4}-\d\d-\d\d \d\d:\d\d in .+", text)
    assert render_system(p, {"who": "you", "model": "override"}, model="m1").startswith("Hi you on")
    assert parse_variables(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(UsageError, match="name=value"):
        parse_variables(["novalue"])
    assert path.exists()


BAD = {
    "unknown key": ("---\ndescription: x\ntemprature: 0.5\n---\nbody\n", 3, "unknown key 'temprature'; did you mean 'temperature'"),
    "wrong type": ("---\ntemperature: hot\n---\nbody\n", 2, "temperature must be a number, got 'hot'"),
    "out of range": ("---\ndescription: d\ntemperature: -1\n---\nbody\n", 3, "temperature must be >= 0"),
    "top_p range": ("---\ntop_p: 1.5\n---\nbody\n", 2, r"top_p must be in \(0, 1\]"),
    "bool as int": ("---\ntop_k: true\n---\nbody\n", 2, "top_k must be an integer"),
    "stop type": ("---\nstop: [1, 2]\n---\nbody\n", 2, "stop must be"),
    "variables type": ("---\nvariables: [a, b]\n---\nbody\n", 2, "variables must be a mapping"),
    "duplicate key": ("---\ntemperature: 0.1\ntemperature: 0.2\n---\nbody\n", 3, "set twice"),
    "broken yaml": ("---\ntemperature: 0.2\ndescription: a: b\n---\nbody\n", 3, "broken YAML front matter: mapping values"),
    "not a mapping": ("---\n- a\n- b\n---\nbody\n", 2, "must be key: value"),
    "unclosed front matter": ("---\ndescription: x\nbody\n", 1, "never closed"),
    "broken jinja body": ("---\ndescription: x\n---\nline one\nline two {{ oops \n", 5, "broken Jinja"),
    "broken jinja template": ("---\ntemplate: |\n  {% for m in messages %}\n  {{ m.content }\n---\nbody\n", 4, "broken Jinja"),
    "invalid utf-8": (b"---\ndescription: x\n---\nfine\nbad \xff\xfe here\n", 5, "invalid UTF-8 at byte offset 32"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_get_one_line_naming_file_and_line(case):
    text, line, what = BAD[case]
    path = write("bad", text)
    with pytest.raises(LoadError) as info:
        load_prompt("bad")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert re.search(what, message), message


def test_undefined_variable_names_it_and_its_line():
    path = write("u", "---\nvariables:\n  a: 1\n---\nfirst {{ a }}\nsecond {{ missing_thing }}\n")
    p = load_prompt("u")  # loading is fine; rendering without the variable is not
    with pytest.raises(LoadError, match=rf"^{re.escape(str(path))}:6: undefined variable 'missing_thing'; pass -v missing_thing=VALUE"):
        render_system(p)
    assert render_system(p, {"missing_thing": "ok"}) == "first 1\nsecond ok"


def test_unsafe_body_is_refused():
    path = write("evil", "{{ ().__class__.__base__.__subclasses__() }}")
    with pytest.raises(LoadError, match=rf"^{re.escape(str(path))}: unsafe prompt template"):
        render_system(load_prompt("evil"))


def test_names_are_allow_listed_and_stay_inside(tmp_path):
    for bad in ("../etc/passwd", "/abs", "a\x00b", ".hidden", ""):
        with pytest.raises(UsageError):
            load_prompt(bad) if not bad.endswith(".md") else None
    outside = tmp_path / "outside.md"
    outside.write_text("secret")
    settings.prompts_dir().mkdir(parents=True, exist_ok=True)
    (settings.prompts_dir() / "escape.md").symlink_to(outside)
    with pytest.raises(UsageError, match="outside"):
        load_prompt("escape")
    (settings.prompts_dir() / "inner.md").symlink_to(write("real", "a prompt body").name)  # a link inside is fine
    names = {p.name for p in list_prompts()}
    assert "escape" not in names and {"inner", "real"} <= names


def test_unknown_prompt_suggests_the_closest():
    with pytest.raises(UsageError, match="unknown prompt 'cdoer'; did you mean 'coder'"):
        load_prompt("cdoer")


def test_list_prompts_collects_broken_files():
    write("broken", "---\nbogus: 1\n---\nx\n")
    with pytest.raises(LoadError):
        list_prompts()
    errors: list[LoadError] = []
    names = {p.name for p in list_prompts(errors)}
    assert SHIPPED <= names and "broken" not in names
    assert len(errors) == 1 and "unknown key 'bogus'" in str(errors[0])


def test_a_path_to_a_file_loads_directly(tmp_path):
    f = tmp_path / "adhoc.md"
    f.write_text("---\ntop_k: 5\n---\nAd hoc.")
    p = load_prompt(str(f))
    assert p.name == "adhoc" and p.params == {"top_k": 5}
