"""Structured output over HTTP: the server's response_format (json_object, json_schema strict or not) and llama.cpp's
`grammar`, streamed and not, on a tiny random model and on SmolLM2, with every reply validated by jsonschema; 400s
that name what is wrong; finish_reason "length" when max_tokens cuts the JSON; and the openai backend passing the
format on to our own server (the ask command included)."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from chatcli.backends.local import LocalBackend
from chatcli.backends.openai import OpenAIBackend
from chatcli.server import ServerThread
from chatcli.structured import check_format, schema_format
from chatcli.types import Message, SamplingParams
from tests.plugins import run_cli
from tests.schemas20 import SCHEMAS
from tests.tinymodels import make_tiny_model


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory, tiny_tokenizer_dir):
    # the 400-token tokenizer and bounded schemas: see tests/schemas20.py
    folder = make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-json", "llama", tokenizer_dir=tiny_tokenizer_dir,
                             max_position_embeddings=1024)
    backend = LocalBackend(dtype="float32")
    backend.load(str(folder))
    with ServerThread(backend, "tiny") as server:
        yield server


@pytest.fixture(scope="module")
def smollm2_server(smollm2_dir):
    backend = LocalBackend()
    backend.load(str(smollm2_dir))
    with ServerThread(backend, "smollm2") as server:
        yield server


def chat(server, model: str, name: str, schema: dict, *, stream: bool, strict: bool = True, **args) -> tuple[str, str]:
    """The content and finish_reason of one request through the official client."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    request = dict(model=model, messages=[{"role": "user", "content": f"Reply with JSON for a {name}."}],
                   response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}},
                   **args)
    if not stream:
        r = client.chat.completions.create(**request)
        return r.choices[0].message.content, r.choices[0].finish_reason
    events = list(client.chat.completions.create(stream=True, **request))
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    return text, next(e.choices[0].finish_reason for e in events if e.choices and e.choices[0].finish_reason)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_twenty_schemas_streamed_and_not_on_a_tiny_model(tiny_server, temperature):
    for i, (name, schema) in enumerate(SCHEMAS.items()):
        args = dict(temperature=temperature, seed=i, max_tokens=700, strict=i % 2 == 0)
        whole, finish = chat(tiny_server, "tiny", name, schema, stream=False, **args)
        streamed, finish_streamed = chat(tiny_server, "tiny", name, schema, stream=True, **args)
        assert streamed == whole and finish == finish_streamed == "stop", (name, whole)
        jsonschema.validate(json.loads(whole), schema)


def test_twenty_schemas_on_smollm2_greedy_streamed_and_not(smollm2_server):
    # every schema at temperature 0, streamed and not in turn; at temperature 1 every schema goes through the real
    # `ask --schema` in test_structured_ask.py (together about 45 s of SmolLM2)
    for i, (name, schema) in enumerate(SCHEMAS.items()):
        text, finish = chat(smollm2_server, "smollm2", name, schema, stream=i % 2 == 1,
                            temperature=0.0, seed=i, max_tokens=300)
        assert finish == "stop", (name, text)
        jsonschema.validate(json.loads(text), schema)


def test_json_object_grammar_and_completions(tiny_server):
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 40,
            "response_format": {"type": "json_object"}}
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200
    # a random model's endless string: cut by max_tokens, said plainly (never "stop" on a fragment)
    assert r.json()["choices"][0]["finish_reason"] == "length"
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 1, "seed": 5, "max_tokens": 40,
            "grammar": 'root ::= "ans: " ("yes" | "no")'}
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.json()["choices"][0]["message"]["content"] in ("ans: yes", "ans: no")
    schema = SCHEMAS["refs"]
    body = {"prompt": "JSON:", "temperature": 0, "max_tokens": 300, "stream": False,
            "response_format": {"type": "json_schema", "json_schema": {"name": "refs", "schema": schema}}}
    r = httpx.post(tiny_server.url + "/v1/completions", json=body, timeout=60)
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), schema)


def test_max_tokens_cut_is_length_streamed_and_not(tiny_server):
    for stream in (False, True):
        text, finish = chat(tiny_server, "tiny", "account", SCHEMAS["account"], stream=stream, temperature=0,
                            max_tokens=5)
        assert finish == "length" and text


@pytest.mark.parametrize("fmt, param, says", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objet"}}}, "response_format", "$.type"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}, "response_format",
     'Unimplemented keys: ["not"]'),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(a"}}},
     "response_format", "regex"),
    ({"type": "json_schema"}, "response_format", "json_schema must be an object"),
    ({"type": "xml"}, "response_format", "'xml' is not supported"),
    ("json", "response_format", "must be an object"),
])
def test_a_bad_format_is_a_400_that_names_it(tiny_server, fmt, param, says):
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": fmt}
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and says in err["message"], err


def test_a_bad_grammar_is_a_400(tiny_server):
    body = {"messages": [{"role": "user", "content": "hi"}], "grammar": "root ::= ("}
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "grammar"
    body["grammar"], body["response_format"] = 'root ::= "a"', {"type": "json_object"}
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400 and "not both" in r.json()["error"]["message"]


def test_the_openai_backend_passes_the_format_on(tiny_server):
    backend = OpenAIBackend(base_url=tiny_server.url + "/v1")
    backend.load("tiny")
    schema = SCHEMAS["order"]
    for temperature in (0.0, 1.0):
        chunks = list(backend.stream_chat([Message("user", "an order")], SamplingParams(temperature=temperature, seed=2,
                                          max_tokens=700), response_format=schema_format(schema)))
        assert chunks[-1].finish_reason == "stop"
        jsonschema.validate(json.loads("".join(c.text for c in chunks)), schema)
    chunks = list(backend.stream_completion("x", SamplingParams(temperature=1.0, seed=3, max_tokens=20),
                                            response_format=check_format({"type": "grammar", "grammar": 'root ::= "ok"'})))
    assert "".join(c.text for c in chunks) == "ok"


def test_ask_through_the_openai_backend(tiny_server, tmp_path):
    schema = SCHEMAS["deep"]
    r = run_cli("ask", "--backend", "openai", "--base-url", tiny_server.url + "/v1", "--model", "tiny", "--schema",
                json.dumps(schema), "-t", "1", "--seed", "4", "--max-tokens", "700", "--no-save", "deep JSON")
    assert r.returncode == 0, r.stderr
    jsonschema.validate(json.loads(r.stdout), schema)


def test_stop_strings_with_a_format_are_a_400(tiny_server):
    body = {"messages": [{"role": "user", "content": "hi"}], "stop": ["}"], "response_format": {"type": "json_object"}}
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400 and "stop strings and structured output do not mix" in r.json()["error"]["message"]
