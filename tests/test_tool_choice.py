"""tool_choice "required" (or a named tool) is enforced: a grammar mask (llguidance, engine/grammar.py) makes the
reply one call, in the format the chat template teaches, whose arguments match the tool's JSON Schema. Checked on a
tiny random model with Qwen2.5's real tokenizer and template at temperature 0 and 1 (a random model calls nothing on
its own), and on the real Qwen2.5-Coder-0.5B through `chatcli serve` with a prompt that asks for no tool."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest

from chatcli.backends.local import LocalBackend
from chatcli.toolcalls import LLAMA3, call_grammar
from chatcli.types import Message, SamplingParams
from tests.test_templates_tools import LLAMA32
from tests.tinymodels import make_tiny_model

FORECAST = {"type": "function", "function": {
    "name": "get_forecast", "description": "The forecast for a city.",
    # Bounded, so that a random model at temperature 1 cannot write an endless string or number.
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city"], "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "units": {"enum": ["C", "F"]}}}}}
CLOCK = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {},
                                                                        "additionalProperties": False}}}


@pytest.fixture(scope="module")
def tiny_qwen_tokenized(tmp_path_factory, qwen_dir):
    """A tiny random llama-family model over Qwen2.5's real 151k tokenizer, with its real chat template."""
    tok_dir = tmp_path_factory.mktemp("qwen-tok")
    shutil.copy(qwen_dir / "tokenizer.json", tok_dir / "tokenizer.json")
    (tok_dir / "vocab_size").write_text(json.dumps(151936))
    # the template's tool preamble alone is about 250 tokens
    path = make_tiny_model(tmp_path_factory.mktemp("tiny-qwen-tools"), tokenizer_dir=tok_dir, max_position_embeddings=1024)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = json.loads((qwen_dir / "tokenizer_config.json").read_text())["chat_template"]
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    backend = LocalBackend(dtype="float32")
    backend.load(str(path))
    return backend


def one_call(chunks) -> tuple[str, dict]:
    assert chunks[-1].finish_reason == "tool_calls", "".join(c.text for c in chunks)
    deltas = [d for c in chunks for d in c.tool_calls]
    assert {d.index for d in deltas} == {0}
    return next(d.name for d in deltas if d.name), json.loads("".join(d.arguments for d in deltas))


@pytest.mark.parametrize("temperature,seed", [(0.0, 0), (1.0, 1), (1.0, 2), (1.0, 3)])
def test_a_random_model_calls_with_valid_arguments(tiny_qwen_tokenized, temperature, seed):
    params = SamplingParams(temperature=temperature, seed=seed, max_tokens=200)
    ask = [Message("user", "What will the weather be in Oslo?")]
    chunks = list(tiny_qwen_tokenized.stream_chat(ask, params, tools=[FORECAST, CLOCK], tool_choice="required"))
    name, args = one_call(chunks)
    assert name in ("get_forecast", "now")
    schema = (FORECAST if name == "get_forecast" else CLOCK)["function"]["parameters"]
    jsonschema.validate(args, schema)
    # Without the requirement the same random model writes text, not a call.
    free = list(tiny_qwen_tokenized.stream_chat(ask, params.with_(max_tokens=20), tools=[FORECAST]))
    assert free[-1].finish_reason != "tool_calls"


def test_llama3_format_grammar_is_the_bare_call():
    grammar = call_grammar(LLAMA32.read_text(), [FORECAST], lambda tag: None)
    assert grammar.startswith("start: call") and '"parameters"' in grammar
    assert call_grammar("{{ messages }}", [FORECAST], lambda tag: None) is None  # no format: nothing to enforce
    from chatcli.toolcalls import detect_format

    assert detect_format(LLAMA32.read_text()) == LLAMA3


def test_required_with_response_format_is_refused(tiny_qwen_tokenized):
    from chatcli.errors import UsageError

    with pytest.raises(UsageError, match="cannot be combined"):
        list(tiny_qwen_tokenized.stream_chat([Message("user", "hi")], SamplingParams(), tools=[FORECAST],
                                             tool_choice="required", response_format={"type": "json_object"}))


def test_real_model_required_and_named_over_the_wire(qwen_server):
    joke = [{"role": "user", "content": "Tell me a joke about cats."}]
    free = qwen_server.chat.completions.create(model="qwen", messages=joke, tools=[FORECAST], temperature=0,
                                               max_tokens=30)
    assert free.choices[0].finish_reason != "tool_calls"  # left to itself it tells the joke
    for choice in ("required", {"type": "function", "function": {"name": "get_forecast"}}):
        whole = qwen_server.chat.completions.create(model="qwen", messages=joke, tools=[FORECAST, CLOCK],
                                                    tool_choice=choice, temperature=0, max_tokens=80)
        (call,) = whole.choices[0].message.tool_calls
        assert whole.choices[0].finish_reason == "tool_calls"
        if isinstance(choice, dict):
            assert call.function.name == "get_forecast"
        schema = (FORECAST if call.function.name == "get_forecast" else CLOCK)["function"]["parameters"]
        jsonschema.validate(json.loads(call.function.arguments), schema)
        events = list(qwen_server.chat.completions.create(model="qwen", messages=joke, tools=[FORECAST, CLOCK],
                                                          tool_choice=choice, temperature=0, max_tokens=80,
                                                          stream=True))
        pieces = [tc for e in events if e.choices for tc in (e.choices[0].delta.tool_calls or [])]
        assert "".join(p.function.arguments or "" for p in pieces) == call.function.arguments
