"""The server's /openapi.json, and schemathesis fuzzing a real server on 127.0.0.1 against it.

The echo backend serves: every route runs for real (parsing, the queue, streaming, errors) at no model's cost, so the
fuzzer spends its few examples on the API. Bounded in examples and without a deadline (a timed test would flake on a
loaded machine); the run checks no 5xx, documented statuses, content types and response bodies, and /health after.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chatcli.server import ServerThread
from chatcli.server.schema import ChatCompletionRequest, bounds
from chatcli.types import PARAMS, check
from tests.plugins import echo_backend


@pytest.fixture(scope="module")
def server():
    with ServerThread(echo_backend(), "echo-1") as s:
        yield s


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode, examples", [(GenerationMode.POSITIVE, 60), (GenerationMode.NEGATIVE, 40)])
def test_fuzzed_requests_get_no_5xx_and_documented_answers(server, mode, examples):
    """Bodies the schema allows (positive) and bodies it rules out (negative), over every route. Negative bodies are
    not required to be refused: unknown keys are ignored by design, as OpenAI's server does."""
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")

    @given(case=api.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    def fuzz(case):
        case.call_and_validate(checks=CHECKS)

    fuzz()


def test_the_server_still_answers_after_the_fuzzing(server):
    # after the fuzzing above (pytest runs a module's tests in order): no request wedged the queue
    r = httpx.get(server.url + "/health", timeout=10)
    assert r.status_code == 200 and r.json()["queue"] == 0


def test_openapi_describes_the_request_bodies_and_their_ranges(server):
    doc = httpx.get(server.url + "/openapi.json", timeout=10).json()
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    chat = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert "messages" in chat["required"] and {"tools", "tool_choice", "response_format", "stream_options"} <= set(chat["properties"])
    top_p = next(s for s in chat["properties"]["top_p"]["anyOf"] if s.get("type") == "number")
    assert top_p["exclusiveMinimum"] == 0 and top_p["maximum"] == 1
    assert doc["paths"]["/v1/completions"]["post"]["responses"]["400"]  # the errors, in OpenAI's shape


@pytest.mark.parametrize("name", [n for n, spec in PARAMS.items() if spec.kind is not tuple])
def test_the_schemas_bounds_agree_with_the_parameters_own_check(name):
    """The bounds read from each rule's words are the ones check() enforces: inside passes, just outside fails."""
    spec = PARAMS[name]
    for key, edge in bounds(spec).items():
        step = 1 if spec.kind is int else 1e-6
        edge = spec.kind(edge)
        beyond = edge - step if key in ("ge", "gt") else edge + step
        ok, bad = {"ge": (edge, beyond), "le": (edge, beyond), "gt": (edge + step, edge), "lt": (edge - step, edge)}[key]
        check(name, ok)
        with pytest.raises(ValueError):
            check(name, bad)


def test_a_body_the_model_refuses_is_a_400_in_openais_shape(server):
    # protocol.py does not look into a tool's description: the model does, and says where
    r = httpx.post(server.url + "/v1/chat/completions", timeout=10, json={
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "description": 3}}]})
    assert r.status_code == 400
    assert r.json()["error"] == {"message": "'tools[0].function.description': Input should be a valid string",
                                 "type": "invalid_request_error", "param": "tools", "code": None}
    assert ChatCompletionRequest.model_validate({"messages": [{"role": "developer", "content": "x"}]})
