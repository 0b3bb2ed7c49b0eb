"""Prompt files: Markdown with YAML front matter (sampling settings, a turn template, variables) and a Jinja body.

$CHATCLI_HOME/prompts/NAME.md overrides the packaged chatcli/data/prompts/NAME.md. Every problem with a file is a
LoadError worded "FILE:LINE: what is wrong; the fix".
"""

from __future__ import annotations

import datetime as _dt
import difflib
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import SecurityError

from chatcli import settings
from chatcli.errors import FileParamError, LoadError, UsageError
from chatcli.types import PARAM_NAMES, ParamError, check

PACKAGED = settings.PACKAGE_DATA / "prompts"
KEYS = ("description", *PARAM_NAMES, "template", "variables", "think")
BUILTINS = ("date", "time", "cwd", "os", "model")
SCALARS = (str, int, float, bool, type(None))


@dataclass
class Prompt:
    """One prompt file. params holds validated sampling overrides (stop as a tuple); body is the unrendered system prompt."""

    name: str
    path: Path
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    template: str | None = None  # a chat template for base models ("classic" names the built-in one)
    variables: dict[str, Any] = field(default_factory=dict)
    body: str = ""
    body_line: int = 1  # the file line where the body starts, for error messages
    packaged: bool = False
    think: str | None = None  # a thinking model: on, off or auto; None leaves it to the settings


def _fail(path: Path, line: int, what: str) -> LoadError:
    return LoadError(f"{path}:{line}: {what}")


def _decode(data: bytes, path: Path) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise _fail(path, line, f"invalid UTF-8 at byte offset {e.start}; re-save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def _split(text: str, path: Path) -> tuple[str, str, int]:
    """(front matter, body, line where the body starts)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return "", text, 1
    for i, line in enumerate(lines[1:], start=1):
        if line.rstrip() in ("---", "..."):
            return "".join(lines[1:i]), "".join(lines[i + 1 :]), i + 2
    raise _fail(path, 1, "the front matter opened with '---' is never closed; add a '---' line after it")


def _type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list",
            dict: "a mapping", type(None): "empty"}.get(type(value), type(value).__name__)


def _check_value(key: str, value: Any, where: str) -> Any:
    """Type- and range-check one front matter value; return it normalised. Raises UsageError with the reason."""
    if key in ("description", "template"):
        if not isinstance(value, str):
            raise UsageError(f"{key} must be a string, got {_type_name(value)}")
        return value
    if key == "think":  # YAML reads a bare on/off as true/false
        word = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
        if word not in ("auto", "on", "off"):
            raise UsageError(f"think must be on, off or auto, got {value!r}")
        return word
    if key == "variables":
        if not isinstance(value, dict):
            raise UsageError(f"variables must be a mapping of name: default, got {_type_name(value)}")
        for name, default in value.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise UsageError(f"variable name {name!r} must be a plain identifier (letters, digits, _)")
            if not isinstance(default, SCALARS):
                raise UsageError(f"variable {name!r} default must be a string or number, got {_type_name(default)}")
        return dict(value)
    return check(key, value)  # a sampling parameter: the schema's type and range check, as at every edge


def _front_matter(front: str, path: Path) -> dict[str, Any]:
    """Parse and validate the front matter; each error names its file line (the front matter starts on line 2)."""
    if not front.strip():
        return {}
    try:
        root = yaml.compose(front, Loader=yaml.SafeLoader)
        data = yaml.safe_load(front)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise _fail(path, (mark.line + 2) if mark else 1, f"broken YAML front matter: {problem}") from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise _fail(path, 2, f"the front matter must be key: value lines, got {_type_name(data)}")
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for key_node, value_node in root.value:
        key, line = key_node.value, key_node.start_mark.line + 2
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise _fail(path, line, f"unknown key {key!r}; {hint}allowed keys: {', '.join(KEYS)}")
        if key in seen:
            raise _fail(path, line, f"key {key!r} is set twice; keep one")
        seen.add(key)
        try:
            out[key] = _check_value(key, data[key], str(path))
        except ParamError as e:
            raise FileParamError(f"{path}:{value_node.start_mark.line + 2}: {e}") from None
        except UsageError as e:
            raise _fail(path, value_node.start_mark.line + 2, str(e)) from None
        if key == "template":
            out["_template_line"] = value_node.start_mark.line + 2 + (1 if value_node.style in ("|", ">") else 0)
    return out


def parse_prompt(data: bytes | str, path: Path, name: str | None = None, packaged: bool = False) -> Prompt:
    """Parse the text of a prompt file; the body's and template's Jinja syntax is checked here."""
    from chatcli.sandbox import compile_sandboxed
    from chatcli.templates import TEMPLATE_ALIASES

    path = Path(path)
    text = _decode(data, path) if isinstance(data, bytes) else data
    front, body, body_line = _split(text, path)
    fm = _front_matter(front, path)
    template = fm.get("template")
    for source, first_line, strict in ((body, body_line, True), (None if template in TEMPLATE_ALIASES else template,
                                                                   fm.get("_template_line", 1), False)):
        if not source:
            continue
        try:
            compile_sandboxed(source, strict)
        except TemplateSyntaxError as e:
            raise _fail(path, first_line + (e.lineno or 1) - 1, f"broken Jinja: {e.message}") from None
        except SecurityError as e:
            raise _fail(path, first_line, f"unsafe template: {e}") from None
    return Prompt(
        name=name or path.stem, path=path, description=fm.get("description", ""),
        params={k: fm[k] for k in PARAM_NAMES if k in fm}, template=template, variables=fm.get("variables", {}),
        body=body, body_line=body_line, packaged=packaged, think=fm.get("think"),
    )


def read_prompt_file(path: Path, name: str | None = None, packaged: bool = False) -> Prompt:
    """Read and parse one prompt file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LoadError(f"{path}: cannot read the prompt file ({e.strerror})") from None
    return parse_prompt(data, Path(path), name, packaged)


def _candidates() -> dict[str, tuple[Path, bool]]:
    """Every prompt name with its file: the user folder wins over the packaged prompts."""
    found: dict[str, tuple[Path, bool]] = {}
    for folder, packaged in ((PACKAGED, True), (settings.prompts_dir(), False)):
        if folder.is_dir():
            root = folder.resolve()
            for p in sorted(folder.glob("*.md")):
                # A link out of the folder would be refused on load (names.inside); listing it would advertise it.
                if p.resolve().is_relative_to(root):
                    found[p.stem] = (p, packaged)
    return found


def prompt_path(name: str) -> tuple[Path, bool]:
    """The file for prompt NAME and whether it is the packaged one; UsageError for an unknown or unsafe name."""
    from chatcli.names import check_name, inside

    check_name(name, "prompt")
    user = settings.prompts_dir() / f"{name}.md"
    if user.is_file() or user.is_symlink():
        return inside(settings.prompts_dir(), user), False
    packaged = PACKAGED / f"{name}.md"
    if packaged.is_file():
        return packaged, True
    names = sorted(_candidates())
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown prompt {name!r}; {hint}available: {', '.join(names) or 'none'} "
                     f"(create it with `chatcli prompts new {name}`)")


def load_prompt(name: str) -> Prompt:
    """Load prompt NAME (user folder first, then packaged), or a path to a .md file."""
    if name.endswith(".md") and (os.sep in name or Path(name).is_file()):
        return read_prompt_file(Path(name).expanduser())
    path, packaged = prompt_path(name)
    return read_prompt_file(path, name, packaged)


def list_prompts(errors: list[LoadError] | None = None) -> list[Prompt]:
    """All prompts by name. A broken file raises, or is appended to ERRORS when a list is given."""
    out = []
    for name, (path, packaged) in sorted(_candidates().items()):
        try:
            out.append(read_prompt_file(path, name, packaged))
        except LoadError as e:
            if errors is None:
                raise
            errors.append(e)
    return out


def builtin_variables(model: str) -> dict[str, str]:
    """date, time, cwd, os and model, as the body sees them."""
    now = _dt.datetime.now()
    system = {"Darwin": "macOS"}.get(platform.system(), platform.system())
    return {"date": now.strftime("%Y-%m-%d"), "time": now.strftime("%H:%M"), "cwd": os.getcwd(), "os": system, "model": model}


def parse_variables(pairs: list[str] | None) -> dict[str, str]:
    """`-v name=value` pairs to a dict; UsageError for a malformed one."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip().isidentifier():
            raise UsageError(f"-v {pair!r}: write -v name=value (name: letters, digits and _)")
        out[name.strip()] = value
    return out


def _undefined_line(prompt: Prompt, source_ast: nodes.Template, name: str) -> int:
    for node in source_ast.find_all(nodes.Name):
        if node.name == name and node.ctx == "load":
            return prompt.body_line + node.lineno - 1
    return prompt.body_line


def render_system(prompt: Prompt, variables: dict[str, Any] | None = None, model: str = "") -> str:
    """The system prompt text: the body rendered with built-ins < the file's defaults < VARIABLES."""
    from chatcli.sandbox import compile_sandboxed, run_sandboxed, sandbox_env

    context = {**builtin_variables(model), **prompt.variables, **(variables or {})}
    if "{" not in prompt.body:
        return prompt.body.strip()
    env = sandbox_env(strict=True)
    ast = env.parse(prompt.body)
    missing = sorted(meta.find_undeclared_variables(ast) - set(context) - set(env.globals))
    if missing:
        name = missing[0]
        raise _fail(prompt.path, _undefined_line(prompt, ast, name),
                    f"undefined variable '{name}'; pass -v {name}=VALUE or give it a default under `variables:`")
    try:
        text = run_sandboxed(compile_sandboxed(prompt.body, True), context, 1_000_000, what="prompt template")
    except LoadError as e:  # unsafe or runaway body
        raise LoadError(f"{prompt.path}: {e}") from None
    except UndefinedError as e:
        raise _fail(prompt.path, prompt.body_line, f"{e}; pass it with -v or fix the body") from None
    except (TemplateError, TypeError, ValueError, ArithmeticError) as e:
        raise _fail(prompt.path, prompt.body_line, f"the body failed to render: {e}") from None
    return text.strip()
