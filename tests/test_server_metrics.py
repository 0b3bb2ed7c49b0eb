"""/metrics over real HTTP: Prometheus' text format, parsed by prometheus_client's own parser, moves as requests do.

The echo backend's replies are known in advance (tokens in and out); a gate in its raw completion holds a generation
open so the gauges (a row running, a request waiting) are read while they are non-zero, with no sleeps.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatcli.server import ServerThread
from tests.plugins import echo_backend


@pytest.fixture(scope="module")
def gated():
    """(server, gate): completions whose prompt starts with "hold" stop after their first piece until gate is set."""
    backend = echo_backend()
    plain = backend.stream_completion
    gate = threading.Event()

    def stream_completion(prompt, params, *, cancel=None, **kw):
        chunks = plain(prompt, params, cancel=cancel, **kw)
        if prompt.startswith("hold"):
            yield next(chunks)
            gate.wait(30)
        yield from chunks

    backend.stream_completion = stream_completion
    with ServerThread(backend, "echo-1") as server:
        yield server, gate


def scrape(server) -> dict:
    """{(sample name, frozen labels): value} of one /metrics scrape."""
    r = httpx.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def moved(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counters_move_by_the_requests_tokens(gated):
    server, _ = gated
    before = scrape(server)
    chat = httpx.post(server.url + "/v1/chat/completions", timeout=10,
                      json={"messages": [{"role": "user", "content": "one two three"}]}).json()
    with httpx.stream("POST", server.url + "/v1/completions", timeout=10,
                      json={"prompt": "four five", "stream": True, "max_tokens": 2}) as r:
        streamed = [line for line in r.iter_lines() if line.startswith("data: ")]
    bad = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "top_p": 0}, timeout=10)
    after = scrape(server)

    assert bad.status_code == 400 and streamed[-1] == "data: [DONE]"
    assert moved(before, after, "chatcli_requests_total", route="/v1/chat/completions", status="200") == 1
    assert moved(before, after, "chatcli_requests_total", route="/v1/completions", status="200") == 1
    assert moved(before, after, "chatcli_requests_total", route="/v1/completions", status="400") == 1
    # the echo backend counts a raw prompt's words as its tokens and echoes them back: 2 in, 2 out (max_tokens)
    assert moved(before, after, "chatcli_prompt_tokens_total") == chat["usage"]["prompt_tokens"] + 2
    assert moved(before, after, "chatcli_completion_tokens_total") == chat["usage"]["completion_tokens"] + 2
    assert moved(before, after, "chatcli_prompt_cached_tokens_total") == 0
    # both answered requests had a first token; each reply's later pieces were timed as gaps
    assert moved(before, after, "chatcli_time_to_first_token_seconds_count") == 2
    assert moved(before, after, "chatcli_inter_token_seconds_count") == (chat["usage"]["completion_tokens"] - 1) + (2 - 1)
    assert after[("chatcli_time_to_first_token_seconds_bucket", frozenset({("le", "+Inf")}))] >= 2
    assert after[("chatcli_active_rows", frozenset())] == after[("chatcli_queue_depth", frozenset())] == 0


def test_gauges_show_the_running_row_and_the_waiting_request(gated):
    server, gate = gated
    gate.clear()
    with httpx.stream("POST", server.url + "/v1/completions", timeout=30,
                      json={"prompt": "hold one two", "stream": True}) as first:
        lines = first.iter_lines()
        assert next(line for line in lines if '"text": "hold' in line)  # its first piece: the row is taken
        waiting = threading.Thread(target=httpx.post, args=(server.url + "/v1/completions",),
                                   kwargs={"json": {"prompt": "next"}, "timeout": 30})
        waiting.start()
        deadline = time.monotonic() + 10
        while (now := scrape(server))[("chatcli_queue_depth", frozenset())] < 1 and time.monotonic() < deadline:
            pass  # the second request reaches the queue a moment after it is sent
        assert now[("chatcli_active_rows", frozenset())] == 1 and now[("chatcli_queue_depth", frozenset())] == 1
        gate.set()
        assert [line for line in lines if line][-1] == "data: [DONE]"
    waiting.join(30)
    after = scrape(server)
    assert after[("chatcli_active_rows", frozenset())] == after[("chatcli_queue_depth", frozenset())] == 0
