"""Structured output at the edges: a --schema value, a /set schema value or an HTTP response_format becomes one
checked format (OpenAI's response_format shape), and a format becomes the grammar the engine masks with.

A format is the dict OpenAI's API takes: {"type": "json_object"}, {"type": "json_schema", "json_schema": {"name",
"schema", "strict"}}, or chatcli's own {"type": "grammar", "grammar": TEXT} (a Lark or GBNF grammar, llama.cpp's
`grammar`). The schema itself is checked against its JSON Schema metaschema (jsonschema), then compiled, so a typo
and a keyword the grammar library cannot enforce are both errors that name the place, not ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from chatcli.engine.errors import GrammarError
from chatcli.errors import UsageError

MAX_SCHEMA_BYTES = 1 << 20
JSON_OBJECT = {"type": "json_object"}


def read_schema(value: str, flag: str = "--schema") -> dict:
    """A --schema / /set schema value: JSON text, or the path of a file holding it; UsageError names what is wrong."""
    text, where = value.strip(), "the schema"
    if not text.startswith(("{", "[", '"')) and text not in ("true", "false"):
        path = Path(text).expanduser()
        if not path.is_file():
            concise = concise_schema(text)
            if concise is None:
                raise UsageError(f"{flag} {value!r}: not JSON, not a file, and not the concise form 'name, age int, bio'")
            return concise
        if path.stat().st_size > MAX_SCHEMA_BYTES:
            raise UsageError(f"{path}: a schema file is at most {MAX_SCHEMA_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{path}: cannot be read ({e})") from None
        where = str(path)
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    check_schema(schema, where)
    return schema


_CONCISE_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_CONCISE_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\s+(str|int|float|bool))?\s*(?::\s*(.*))?")


def concise_schema(text: str) -> dict | None:
    """llm's concise schema form: fields split by commas (or newlines, when a description holds a comma), each
    `name [str|int|float|bool][: description]`, all required: 'name, age int, bio: one sentence'. None when TEXT is
    not in that form."""
    parts = [p.strip() for p in (text.splitlines() if "\n" in text.strip() else text.split(","))]
    properties: dict = {}
    for part in filter(None, parts):
        m = _CONCISE_FIELD.fullmatch(part)
        if m is None or m.group(1) in properties:
            return None
        prop: dict = {"type": _CONCISE_TYPES[m.group(2) or "str"]}
        if m.group(3):
            prop["description"] = m.group(3).strip()
        properties[m.group(1)] = prop
    if not properties:
        return None
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def check_schema(schema, where: str = "the schema") -> None:
    """UsageError unless SCHEMA is a valid JSON Schema that the grammar library can enforce in full."""
    import jsonschema

    if not isinstance(schema, (dict, bool)):
        raise UsageError(f"{where}: a JSON Schema is an object, got {type(schema).__name__}")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator) \
        if isinstance(schema, dict) else jsonschema.Draft202012Validator
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise UsageError(f"{where} is not a valid JSON Schema: at {e.json_path}: {e.message}") from None
    grammar_of_schema(schema, where)


def grammar_of_schema(schema, where: str = "the schema") -> str:
    """The engine's grammar for SCHEMA; UsageError names what the library rejected (an unsupported keyword too)."""
    from chatcli.engine.grammar import compile_grammar

    try:
        return compile_grammar("json_schema", schema)
    except GrammarError as e:
        raise UsageError(f"{where}: {e}") from None


def schema_format(schema: dict, name: str = "schema") -> dict:
    """The response_format for SCHEMA (strict: enforced by the mask)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def check_format(fmt) -> dict | None:
    """FMT (a response_format as a client sent it) checked; None for plain text. UsageError names the key."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise UsageError("response_format must be an object such as {\"type\": \"json_object\"}")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise UsageError("response_format.json_schema must be an object with name and schema")
        name = spec.get("name", "schema")
        if not isinstance(name, str):
            raise UsageError("response_format.json_schema.name must be a string")
        if not isinstance(spec.get("strict", False), bool):
            raise UsageError("response_format.json_schema.strict must be true or false")
        schema = spec.get("schema", {"type": "object"})  # OpenAI: a schema left out is any object
        check_schema(schema, "response_format.json_schema.schema")
        # strict or not, the mask enforces the schema: a local model gets no looser reading of it
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": spec.get("strict", False)}}
    if kind == "grammar":
        text = fmt.get("grammar")
        if not isinstance(text, str) or not text.strip():
            raise UsageError("grammar must be a non-empty string (a Lark or GBNF grammar)")
        grammar_of_text(text)
        return {"type": "grammar", "grammar": text}
    raise UsageError(f"response_format type {kind!r} is not supported; use text, json_object or json_schema")


def grammar_of_text(text: str) -> str:
    """The engine's grammar for a Lark or GBNF grammar TEXT; UsageError says what is wrong."""
    from chatcli.engine.grammar import compile_grammar

    try:
        return compile_grammar("gbnf", text)
    except GrammarError as e:
        raise UsageError(f"grammar: {e}") from None


def grammar_of(fmt: dict) -> str:
    """The engine grammar for a checked format (check_format's result)."""
    if fmt["type"] == "grammar":
        return grammar_of_text(fmt["grammar"])
    if fmt["type"] == "json_object":
        from chatcli.engine.grammar import ANY_OBJECT

        return grammar_of_schema(ANY_OBJECT)
    return grammar_of_schema(fmt["json_schema"]["schema"], "response_format.json_schema.schema")


def describe(fmt: dict | None) -> str:
    """One line for /set and the toolbar: off, json, or schema NAME."""
    if fmt is None:
        return "off"
    if fmt["type"] == "json_object":
        return "any JSON object"
    if fmt["type"] == "grammar":
        return "a grammar"
    return f"JSON Schema {fmt['json_schema'].get('name', 'schema')}"


def require_support(backend, method: str = "stream_chat") -> None:
    """UsageError unless BACKEND's METHOD takes response_format (a plugin written before structured output may not):
    said up front, not as a TypeError in the middle of a reply."""
    import inspect

    try:
        params = inspect.signature(getattr(backend, method)).parameters
    except (AttributeError, TypeError, ValueError):
        params = {}
    if "response_format" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        name = getattr(backend, "name", type(backend).__name__)
        raise UsageError(f"the {name} backend does not support structured output (--json-object, --schema)")


def check_stops(fmt: dict | None, stop) -> None:
    """UsageError for stop strings under a format: one would end the reply inside the JSON, as finish "stop"."""
    if fmt is not None and stop:
        raise UsageError("stop strings and structured output do not mix (a stop string would cut the JSON short); "
                         "drop stop or the format")
