"""Structured output in the local engine: the llguidance mask (engine/grammar.py) keeps every reply inside its JSON
Schema at temperature 0 and 1 on a tiny random model, on the real SmolLM2, and through the real `chatcli ask` (all 20
schemas through `ask` on both models: test_structured_ask.py).

The tiny model uses the 400-token tokenizer trained in tests/tinymodels.py (not a 49k one) and the schemas of
tests/schemas20.py bound every string and array: at temperature 1 a random model's closing quote is one token among
hundreds, so an unbounded string runs until max_tokens (the mask keeps it valid JSON, but never complete).
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from chatcli.backends.local import LocalBackend
from chatcli.engine.grammar import GrammarProcessor, compile_grammar
from chatcli.errors import UsageError
from chatcli.structured import JSON_OBJECT, check_format, read_schema, schema_format
from chatcli.types import Message, SamplingParams
from tests.plugins import run_cli
from tests.schemas20 import SCHEMAS
from tests.tinymodels import make_tiny_model


@pytest.fixture(scope="module")
def tiny_json_dir(tmp_path_factory, tiny_tokenizer_dir):
    # a context long enough for the longest schema at temperature 1 (byte-sized tokens)
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-json", "llama", tokenizer_dir=tiny_tokenizer_dir,
                           max_position_embeddings=1024)


@pytest.fixture(scope="module")
def tiny(tiny_json_dir):
    backend = LocalBackend(dtype="float32")
    backend.load(str(tiny_json_dir))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    backend = LocalBackend()
    backend.load(str(smollm2_dir))
    yield backend
    backend.close()


def reply(backend, question: str, fmt: dict | None, **params) -> tuple[str, str]:
    """The reply's text and finish reason."""
    chunks = list(backend.stream_chat([Message("user", question)], SamplingParams(**params), response_format=fmt))
    return "".join(c.text for c in chunks), chunks[-1].finish_reason


def check_all(backend, temperature: float, seeds, max_tokens: int) -> None:
    for name, schema in SCHEMAS.items():
        for seed in seeds:
            text, finish = reply(backend, f"Reply with JSON for a {name}.", schema_format(schema, name),
                                 temperature=temperature, seed=seed, max_tokens=max_tokens)
            assert finish == "stop", (name, seed, text)
            jsonschema.validate(json.loads(text), schema)  # raises, naming the schema path, when it does not match


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_twenty_schemas_on_a_tiny_random_model(tiny, temperature):
    check_all(tiny, temperature, seeds=(1, 2, 3) if temperature else (0,), max_tokens=700)


def test_any_json_object_and_a_grammar(smollm2):
    text, finish = reply(smollm2, "Describe a cat.", JSON_OBJECT, temperature=0.0, max_tokens=200)
    assert finish == "stop" and isinstance(json.loads(text), dict)
    gbnf = check_format({"type": "grammar", "grammar": 'root ::= ("yes" | "no") "."'})
    for seed in (1, 2):
        text, finish = reply(smollm2, "Is Paris in France?", gbnf, temperature=1.0, seed=seed, max_tokens=20)
        assert text in ("yes.", "no.") and finish == "stop"


def test_max_tokens_before_the_end_is_length_not_stop(tiny):
    text, finish = reply(tiny, "json", schema_format(SCHEMAS["account"]), temperature=0.0, max_tokens=4)
    assert finish == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_padding_rows_are_banned_and_eos_waits_for_the_end(tiny):
    tok = tiny.tokenizer
    rows = tiny.model.config.vocab_size
    assert rows > tok.vocab_size  # the tiny model pads its embedding to a multiple of 64
    eos = tok.eos_token_ids
    p = GrammarProcessor(tok, compile_grammar("json_schema", {"type": "object", "properties": {}, "additionalProperties": False}))
    for piece in ("{", "}"):
        logits = p.process(torch.zeros(rows))
        assert torch.isinf(logits[tok.vocab_size:]).all()
        assert all(torch.isinf(logits[e]) for e in eos)  # no EOS inside the document
        p.accept(tok.encode(piece)[0])
    assert p.is_done() and p.is_complete()
    logits = p.process(torch.zeros(rows))
    assert {int(i) for i in torch.nonzero(~torch.isinf(logits))} <= eos | set()  # only EOS is left


@pytest.mark.parametrize("value, says", [
    ('{"type": "objet"}', "$.type"),
    ('{"type": "object", "properties": {"a": {"not": {"type": "string"}}}}', "not"),  # unsupported: named
    ('{"type": "string", "pattern": "[a-"}', "regex"),
    ('{"type": "object"', "not valid JSON"),
    ("no-such-schema.json", "not a file"),
    ("name, age integer", "concise form"),
])
def test_a_bad_schema_is_named(value, says):
    with pytest.raises(UsageError) as e:
        read_schema(value)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_ask_subprocess_schema_file_object_and_errors(smollm2_dir, tmp_path):
    schema = SCHEMAS["order"]
    path = tmp_path / "order.json"
    path.write_text(json.dumps(schema))
    for temperature in ("0", "1"):
        r = run_cli("ask", "--model", str(smollm2_dir), "--schema", str(path), "-t", temperature, "--seed", "3",
                    "--no-save", "An order of two items, as JSON.")
        assert r.returncode == 0, r.stderr
        jsonschema.validate(json.loads(r.stdout), schema)
    r = run_cli("ask", "--model", str(smollm2_dir), "--json-object", "--json", "--no-save", "-t", "0",
                "Describe a cat as JSON with name and age.")
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(json.loads(r.stdout)["text"]), dict)
    # cut by max_tokens: what came is printed, then one error line and exit 1 (a runtime failure, not bad usage)
    r = run_cli("ask", "--model", str(smollm2_dir), "--schema", str(path), "--max-tokens", "3", "--no-save", "An order.")
    assert r.returncode == 1 and r.stdout.strip()
    assert r.stderr.strip().splitlines() == [
        "chatcli: error: the reply reached max_tokens (3) before the JSON was complete (what came is printed as it "
        "is); raise --max-tokens"]
    r = run_cli("ask", "--model", str(smollm2_dir), "--schema", '{"type": "object", "not": {}}', "--no-save", "x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not" in r.stderr
    assert "Traceback" not in r.stderr


def test_repl_set_json_and_schema(tiny_json_dir):
    """Scripted stdin: /set json on (a random model's endless string is cut by max_tokens, and the REPL says the
    JSON is incomplete), then /set schema with a bounded schema, whose reply validates."""
    schema = SCHEMAS["person"]
    script = (f"/set temperature 0\n/set max_tokens 20\n/set json on\nhello\n/set max_tokens 700\n"
              f"/set schema {json.dumps(schema)}\nhello\n/set schema off\n/set json maybe\n")
    r = run_cli("chat", "--model", str(tiny_json_dir), "--no-save", input=script)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "format = any JSON object" in lines and "format = off" in lines
    assert any("before the JSON was complete" in line for line in lines)
    start = lines.index("format = JSON Schema schema") + 1
    end = next(i for i in range(start, len(lines)) if "tok/s" in lines[i])
    jsonschema.validate(json.loads("\n".join(lines[start:end])), schema)
    assert "error: /set json on|off" in r.stderr


def test_sentencepiece_vocabulary_and_multibyte_text(gemma_dir, tiny):
    """Gemma's tokenizer.model (sentencepiece: ▁ for spaces, <0xNN> byte pieces) and the byte-level BPE of the tiny
    model both spell a const with accents, CJK and an emoji exactly."""
    schema = {"type": "object", "properties": {"city": {"const": "Café 你好 😀"}, "n": integer_schema(1, 3)},
              "required": ["city", "n"], "additionalProperties": False}
    gemma = LocalBackend()
    gemma.load(str(gemma_dir))
    try:
        for backend in (gemma, tiny):
            for temperature in (0.0, 1.0):
                chunks = list(backend.stream_completion("A city as JSON: ", SamplingParams(temperature=temperature, seed=1,
                                                        max_tokens=60), response_format=schema_format(schema)))
                assert chunks[-1].finish_reason == "stop"
                jsonschema.validate(json.loads("".join(c.text for c in chunks)), schema)
    finally:
        gemma.close()


def integer_schema(lo: int, hi: int) -> dict:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def test_stop_strings_and_backends_without_the_format_are_refused(tiny):
    with pytest.raises(UsageError, match="stop strings and structured output do not mix"):
        reply(tiny, "x", JSON_OBJECT, stop=("}",))
    from chatcli.structured import require_support
    from tests.plugins import echo_backend

    with pytest.raises(UsageError, match="the echo backend does not support structured output"):
        require_support(echo_backend())
    require_support(tiny)
    require_support(tiny, "stream_completion")


def test_the_concise_schema_form():
    assert read_schema("name, age int, ok bool, score float: 0 to 1") == {
        "type": "object", "additionalProperties": False, "required": ["name", "age", "ok", "score"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "ok": {"type": "boolean"},
                       "score": {"type": "number", "description": "0 to 1"}}}
    assert read_schema("bio: one line, no more\nage int")["properties"]["bio"]["description"] == "one line, no more"
