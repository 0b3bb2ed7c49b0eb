"""chatcli.types: the core vocabulary and the sampling schema every edge derives from."""

from __future__ import annotations

import dataclasses

import pytest

from chatcli import types
from chatcli.types import Chunk, Message, Notice, ParamError, SamplingParams, ToolCall, ToolCallDelta


def test_a_sampling_params_is_always_in_range():
    with pytest.raises(ParamError, match=r"top_p must be in \(0, 1\]; got 0.0"):
        SamplingParams(top_p=0)
    with pytest.raises(ParamError, match="temperature must be >= 0"):
        SamplingParams().with_(temperature=float("nan"))
    p = SamplingParams(temperature=1, top_k=5.0, stop="###")  # normalised: float, int, a tuple of stops
    assert (p.temperature, p.top_k, p.stop) == (1.0, 5, ("###",)) and isinstance(p.temperature, float)
    assert p.to_dict()["stop"] == ["###"]


@pytest.mark.parametrize("name, value, message", [
    ("top_k", True, "top_k must be an integer, got True"),
    ("top_k", 2.5, "top_k must be an integer, got 2.5"),
    ("min_p", "0.1", "min_p must be a number, got '0.1'"),  # text is for parse, not check
    ("stop", [""], "stop must be a non-empty string or a list of them; got ['']"),
    ("stop", [1], "stop must be a non-empty string or a list of them, got [1]"),
    ("temprature", 1, "unknown parameter 'temprature'; did you mean 'temperature'?"),
])
def test_check_names_what_is_wrong(name, value, message):
    with pytest.raises(ParamError) as e:
        types.check(name, value)
    assert str(e.value).startswith(message) and e.value.exit_code == 2


def test_parse_takes_what_a_person_types():
    assert types.parse("temperature", " 0.5 ") == 0.5 and types.parse("seed", "none") is None
    assert types.parse("stop", "\\n\\n") == ("\n\n",) and types.parse("stop", '["a", "b"]') == ("a", "b")
    assert types.parse("stop", "") == ()
    with pytest.raises(ParamError, match="top_k must be an integer, got '1.5'"):
        types.parse("top_k", "1.5")


def test_the_schema_is_the_one_declaration():
    """Defaults, help and the API's defaults come from the dataclass fields themselves."""
    names = [f.name for f in dataclasses.fields(SamplingParams)]
    assert list(types.PARAMS) == names == list(types.PARAM_NAMES)
    assert types.DEFAULTS == {n: getattr(SamplingParams(), n) for n in names}
    assert all(spec.help and spec.metavar and spec.rule for spec in types.PARAMS.values())
    assert types.api_default("temperature") == 1.0 and types.api_default("top_k") == 0


def test_messages_and_chunks_carry_what_is_coming():
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    reply = Message("assistant", "", reasoning="The user wants the weather.", tool_calls=(call,))
    result = Message("tool", '{"c": 3}', tool_call_id="call_1")
    assert reply.tool_calls[0].name == "get_weather" and result.role in types.ROLES
    chunk = Chunk(reasoning="thinking", tool_calls=(ToolCallDelta(0, "call_1", "get_weather", '{"ci'),),
                  notices=(Notice("warning", "slower"),))
    assert chunk.text == "" and chunk.finish_reason is None and chunk.notices[0].kind == "warning"
    assert Message("user", "hi") == Message("user", "hi")  # plain values: comparable and hashable
    assert hash(Notice("info", "x")) == hash(Notice("info", "x"))
