"""KV-cache reuse across turns gives exactly what a fresh cache gives: same logits, same tokens (issue 6).

Each scenario drives one LocalBackend through a few turns, then runs the last turn again on a fresh backend and
compares every forward pass's last-position logits. A wrong reuse is worse than none, so each edit a user can make to
the history between turns is covered: /retry, /undo, an edited or switched system prompt, a changed temperature, and
the context trimmed from the front.
"""

from __future__ import annotations

import pytest
import torch

from chatcli.backends.local import LocalBackend
from chatcli.types import Message, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)
SYS = Message("system", "You are brief.")


def turn(backend: LocalBackend, messages: list[Message], params: SamplingParams = GREEDY):
    """Run one chat turn; return (reply text, stats, [last-position logits of every forward pass])."""
    seen: list[torch.Tensor] = []
    hook = backend.model.register_forward_hook(lambda m, args, out: seen.append(out[0, -1].detach().clone()))
    try:
        chunks = list(backend.stream_chat(messages, params))
    finally:
        hook.remove()
    return "".join(c.text for c in chunks), chunks[-1].stats, seen


def fresh(path) -> LocalBackend:
    b = LocalBackend(dtype="float32")
    b.load(str(path))
    return b


def assert_same_as_fresh(path, backend, messages, params=GREEDY):
    """The reusing backend's turn equals a fresh backend's turn on MESSAGES; return the reusing turn's stats."""
    text, stats, logits = turn(backend, messages, params)
    ref_text, ref_stats, ref_logits = turn(fresh(path), messages, params)
    assert ref_stats.cached_tokens == 0
    assert text == ref_text
    assert len(logits) == len(ref_logits)
    for got, want in zip(logits, ref_logits):
        assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()
    assert stats.prompt_tokens == ref_stats.prompt_tokens
    return stats


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these tiny models gain nothing from two, and on a shared machine a second thread stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["llama", "gemma3"])
def model_path(request, tiny_model_factory):
    return tiny_model_factory(request.param)


@pytest.fixture
def backend(model_path):
    return fresh(model_path)


def history(backend, *users: str) -> list[Message]:
    """A conversation built the way the session builds it: each user message followed by the model's real reply."""
    messages = [SYS]
    for u in users:
        messages.append(Message("user", u))
        reply, _, _ = turn(backend, messages)
        messages.append(Message("assistant", reply))
    return messages


def test_retry_reuses_all_but_the_last_token(model_path, backend):
    messages = [SYS, Message("user", "Hello there")]
    turn(backend, messages)
    stats = assert_same_as_fresh(model_path, backend, messages)
    assert stats.cached_tokens == stats.prompt_tokens - 1 or stats.cached_tokens == 0  # 0 only if a ring forbids it


def test_next_turn_reuses_the_conversation(model_path, backend):
    messages = history(backend, "Hi", "Tell me more")
    before = backend.count_tokens(messages[:-1])
    stats = assert_same_as_fresh(model_path, backend, messages + [Message("user", "ok")])
    if "gemma" not in str(model_path):
        assert stats.cached_tokens >= before - 2  # all of the earlier prompt is kept


def test_undo_then_a_different_message(model_path, backend):
    messages = history(backend, "Hi", "Tell me more")
    undone = messages[:3] + [Message("user", "Something else")]
    assert_same_as_fresh(model_path, backend, undone)


def test_edited_system_prompt_diverges_at_the_start(model_path, backend):
    messages = history(backend, "Hi")
    edited = [Message("system", "You are verbose.")] + messages[1:] + [Message("user", "again")]
    stats = assert_same_as_fresh(model_path, backend, edited)
    assert stats.cached_tokens <= len(backend.tokenizer.encode("<|im_start|>system\nYou are "))  # where they differ


def test_switched_prompt(model_path, backend):
    history(backend, "Hi")
    switched = [Message("system", "Answer in French, and only in French."), Message("user", "Hi")]
    assert_same_as_fresh(model_path, backend, switched)


def test_changed_temperature_same_seed(model_path, backend):
    messages = [SYS, Message("user", "Hello there")]
    turn(backend, messages)
    sampled = SamplingParams(temperature=0.9, top_p=0.95, seed=7, max_tokens=12)
    stats = assert_same_as_fresh(model_path, backend, messages, sampled)
    assert stats.cached_tokens > 0 or "gemma" in str(model_path)


def test_context_trimmed_from_the_front(model_path, backend):
    messages = history(backend, "Hi", "Tell me more", "And then?")
    trimmed = [SYS] + messages[3:] + [Message("user", "last")]  # the oldest exchange dropped, the system prompt kept
    assert_same_as_fresh(model_path, backend, trimmed)


def test_interrupted_turn_then_retry(model_path, backend):
    import threading

    messages = [SYS, Message("user", "Hello there")]
    cancel = threading.Event()
    pieces = []
    for chunk in backend.stream_chat(messages, GREEDY.with_(max_tokens=30), cancel=cancel):
        pieces.append(chunk)
        cancel.set()  # stop after the first piece
    assert pieces[-1].finish_reason in ("interrupted", "stop", "length")
    assert_same_as_fresh(model_path, backend, messages)


def test_completion_then_chat(model_path, backend):
    list(backend.stream_completion("<|im_start|>system\nYou are", GREEDY))
    assert_same_as_fresh(model_path, backend, [SYS, Message("user", "Hi")])


def test_abandoned_stream_leaves_a_consistent_cache(model_path, backend):
    messages = [SYS, Message("user", "Hello there")]
    stream = backend.stream_chat(messages, GREEDY.with_(max_tokens=30))
    next(stream, None)
    stream.close()  # the caller walked away mid-generation
    assert_same_as_fresh(model_path, backend, messages + [Message("assistant", "x"), Message("user", "y")])


def test_cancel_during_a_long_prompt_stops_between_chunks(model_path, backend, monkeypatch):
    """Ctrl-C while a long prompt prefills stops at the next chunk, with no token; the cache keeps only what is sure."""
    import threading

    from chatcli.engine import generate

    monkeypatch.setattr(generate, "PREFILL_CHUNK", 4)
    messages = history(backend, "Hi")
    cancel = threading.Event()
    calls = []

    def forward_hook(module, args, out):
        calls.append(args[0].shape[1])
        cancel.set()  # Ctrl-C arrives while the first chunk runs

    hook = backend.model.register_forward_hook(forward_hook)
    try:
        chunks = list(backend.stream_chat(messages + [Message("user", "A much longer question, with many words in it")], GREEDY, cancel=cancel))
    finally:
        hook.remove()
    assert calls == [4]  # one chunk ran; the rest of the prompt did not
    assert chunks[-1].finish_reason == "interrupted" and chunks[-1].text == "" and chunks[-1].stats.completion_tokens == 0
    monkeypatch.undo()  # back to the usual chunks, so both backends below run the same number of forward passes
    assert_same_as_fresh(model_path, backend, messages + [Message("user", "ok")])  # the cache is still right
