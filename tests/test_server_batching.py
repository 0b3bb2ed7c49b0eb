"""`chatcli serve` with continuous batching (--parallel): a real server on 127.0.0.1 over the local engine (a tiny
random Llama in float32), many clients at once through the official openai client."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from chatcli.backends.local import LocalBackend
from chatcli.server import ServerThread
from chatcli.types import Message, SamplingParams

QUESTIONS = ["Hello world, what is Paris?", "The quick brown fox", "What is the capital of France? " * 3, "Hi",
             "runs   of    spaces and newlines", "User: tell me a story about a fox and a dog"]


@pytest.fixture(scope="module")
def batched(tiny_llama_dir):
    backend = LocalBackend(dtype="float32")
    backend.load(str(tiny_llama_dir))
    assert backend.serve_parallel(4, kv_budget=4 * 256) == 4
    with ServerThread(backend, "tiny", parallel=4) as server:
        yield backend, server
    backend.close()


@pytest.fixture(scope="module")
def alone(tiny_llama_dir):
    backend = LocalBackend(dtype="float32")
    backend.load(str(tiny_llama_dir))
    return backend


def _alone_text(backend, question: str, **params) -> str:
    chunks = backend.stream_chat([Message("user", question)], SamplingParams(**params))
    return "".join(c.text for c in chunks)


def test_concurrent_requests_get_what_each_gets_alone(batched, alone):
    backend, server = batched
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")

    def ask(question: str) -> str:
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": question}],
                                                temperature=0, max_tokens=20, stream=True)
        return "".join(e.choices[0].delta.content or "" for e in stream if e.choices)

    with ThreadPoolExecutor(len(QUESTIONS)) as pool:  # six clients on four rows: two wait for a row
        got = list(pool.map(ask, QUESTIONS))
    assert got == [_alone_text(alone, q, temperature=0.0, max_tokens=20) for q in QUESTIONS]
    # and with a seed, at temperature 1, the same text whatever else runs beside it (the server's own sampling
    # defaults are the API's, so the lone request is sent to the same server)
    seeded = dict(model="tiny", messages=[{"role": "user", "content": QUESTIONS[0]}], temperature=1.0, seed=7, max_tokens=16)
    lone = client.chat.completions.create(**seeded).choices[0].message.content
    with ThreadPoolExecutor(3) as pool:
        others = [pool.submit(client.chat.completions.create, model="tiny", messages=[{"role": "user", "content": q}],
                              temperature=1.0, max_tokens=16) for q in QUESTIONS[1:3]]
        beside = pool.submit(client.chat.completions.create, **seeded).result().choices[0].message.content
        assert all(f.result().choices for f in others)
    assert beside == lone


def test_a_repeated_system_prompt_is_served_from_the_cache(batched):
    backend, server = batched
    system = {"role": "system", "content": "You are a careful assistant who answers in one short line. " * 4}
    usages = []
    for q in ("What is Paris?", "What is a fox?"):
        r = httpx.post(server.url + "/v1/chat/completions", json={"messages": [system, {"role": "user", "content": q}],
                                                                   "max_tokens": 4, "temperature": 0}, timeout=30)
        assert r.status_code == 200
        usages.append(r.json()["usage"])
    system_tokens = backend.count_tokens([Message("system", system["content"])])
    assert usages[1]["prompt_tokens_details"]["cached_tokens"] >= system_tokens - 8  # all but the turn's own start


def test_a_client_that_leaves_frees_its_row(batched):
    """The tiny model writes a whole reply faster than the client reads three lines, and the engine does not wait for
    a reader, so each step is slowed here to keep the reply going while the client leaves (the row then ends by the
    client, not by max_tokens: that race failed this test under make test)."""
    backend, server = batched
    engine = backend._batch
    model = engine.model

    def slow(*args, **kwargs):
        time.sleep(0.02)
        return model(*args, **kwargs)

    engine.model = slow
    try:
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=30,
                          json={"messages": [{"role": "user", "content": "Tell me everything."}], "max_tokens": 200,
                                "stream": True, "temperature": 0, "stream_options": {"include_usage": True}}) as r:
            lines = [line for _, line in zip(range(3), r.iter_lines())]
            assert not any('"finish_reason":"' in line.replace(" ", "") for line in lines), lines  # still going
            assert backend.batch_state[0] == 1
        deadline = time.monotonic() + 5
        while backend.batch_state != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert backend.batch_state == (0, 0)
    finally:
        engine.model = model


def test_a_prompt_longer_than_a_row_is_400_with_both_sizes(batched):
    _, server = batched
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Paris " * 300}]}, timeout=30)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "256" in message and "tokens" in message


def test_structured_output_holds_for_every_row_of_a_batch(tmp_path_factory, tiny_tokenizer_dir):
    """Eight schemas at once at temperature 1: each row's grammar is its own, and each reply ends where its JSON
    does (finish "stop"), not a token early or late."""
    import json

    import jsonschema

    from tests.schemas20 import SCHEMAS
    from tests.tinymodels import make_tiny_model

    folder = make_tiny_model(tmp_path_factory.mktemp("json") / "tiny-json", "llama", tokenizer_dir=tiny_tokenizer_dir,
                             max_position_embeddings=1024)
    backend = LocalBackend(dtype="float32")
    backend.load(str(folder))
    backend.serve_parallel(4)
    schemas = list(SCHEMAS.items())[:8]
    with ServerThread(backend, "tiny", parallel=4) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")

        def ask(i: int):
            name, schema = schemas[i]
            r = client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"Reply with JSON for a {name}."}], temperature=1.0,
                seed=i, max_tokens=700, response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
            return r.choices[0].message.content, r.choices[0].finish_reason

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(ask, range(len(schemas))))
    backend.close()
    for (name, schema), (text, finish) in zip(schemas, replies):
        assert finish == "stop", (name, text)
        jsonschema.validate(json.loads(text), schema)


def test_the_prompt_cache_shows_its_bytes_in_metrics(tiny_llama_dir):
    """What the prefix store holds is memory that grows by design up to --cache-ram: /metrics reports it, so a load
    test can tell it from a leak."""
    from prometheus_client.parser import text_string_to_metric_families

    backend = LocalBackend(dtype="float32")
    backend.load(str(tiny_llama_dir))
    assert backend.serve_parallel(2, kv_budget=2 * 256, cache_ram_mb=4) == 2
    try:
        with ServerThread(backend, "tiny", parallel=2) as server:
            def cache_bytes() -> float:
                text = httpx.get(server.url + "/metrics", timeout=10).text
                return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                            if s.name == "chatcli_prompt_cache_bytes")

            assert cache_bytes() == 0
            for q in QUESTIONS[:3]:  # one after another: each takes the row the last one left, which is stored
                r = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                               json={"messages": [{"role": "user", "content": q * 3}], "max_tokens": 4, "temperature": 0})
                assert r.status_code == 200
            held = cache_bytes()
            assert 0 < held == backend.prompt_cache_bytes <= 4 << 20
    finally:
        backend.close()
