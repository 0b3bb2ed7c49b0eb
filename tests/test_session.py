"""Conversation against a small scripted backend: turns, edits, settings, prompts, faults and the store.

WordBackend is a real implementation of the Backend protocol (it renders with the real chat-template code and
counts whitespace-separated words as tokens); it stands in for a model so these tests run in milliseconds.
The same behaviour is checked with the real LocalBackend and a tiny model in test_session_local.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from chatcli import settings
from chatcli.engine.errors import NumericalError
from chatcli.errors import BackendError, LoadError, StoreError, UsageError
from chatcli.history import History
from chatcli.session import Conversation
from chatcli.templates import FOLDED_SYSTEM, render_chat
from chatcli.types import Chunk, Message, SamplingParams, Stats, parse

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }} {{ m.content }} <|im_end|> {% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")


class WordBackend:
    """Replies with REPLY word by word; one token per whitespace-separated word of the rendered prompt."""

    name = "words"

    def __init__(self, reply: str = "one two three four five", context: int = 200, template: str | None = CHATML):
        self.reply, self.context, self.template = reply, context, template
        self.sent: list[list[Message]] = []
        self.params: list[SamplingParams] = []
        self.fail_after: int | None = None  # raise FAIL after this many words
        self.fail: BaseException = BackendError("connection reset by peer")
        self.emitted = 0

    def models(self) -> list[str]:
        return ["words"]

    def load(self, model: str) -> None:
        pass

    def _render(self, messages, chat_template=None):
        return render_chat(chat_template or self.template, messages)

    def count_tokens(self, messages, *, chat_template=None) -> int:
        return len(self._render(messages, chat_template).text.split())

    def context_length(self) -> int:
        return self.context

    def stream_chat(self, messages, params, *, chat_template=None, cancel=None) -> Iterator[Chunk]:
        rendered = self._render(messages, chat_template)
        self.sent.append(list(messages))
        self.params.append(params)
        words = self.reply.split()
        first = True
        for i, word in enumerate(words[: params.max_tokens]):
            if cancel is not None and cancel.is_set():
                yield Chunk("", "interrupted", Stats(completion_tokens=i))
                return
            if self.fail_after is not None and i == self.fail_after:
                raise self.fail
            self.emitted += 1
            notices = (FOLDED_SYSTEM,) if first and rendered.folded_system else ()
            first = False
            yield Chunk(word + " ", notices=notices)
        finish = "length" if len(words) > params.max_tokens else "stop"
        yield Chunk("", finish, Stats(prompt_tokens=len(rendered.text.split()), completion_tokens=min(len(words), params.max_tokens)))

    def close(self) -> None:
        pass


def reply_of(conv: Conversation, text: str) -> str:
    return "".join(c.text for c in conv.send(text))


@pytest.fixture
def conv():
    return Conversation(WordBackend(), "words", "default", defaults=SamplingParams(temperature=0))


def test_two_exchanges_are_kept_and_saved(conv):
    assert reply_of(conv, "hi") == "one two three four five "
    reply_of(conv, "again")
    assert [(t.role, t.finish_reason) for t in conv.turns] == [("user", None), ("assistant", "stop")] * 2
    reply = conv.turns[1]
    assert reply.model == "words" and reply.prompt == "default" and reply.params.temperature == 0.7
    assert reply.stats.completion_tokens == 5
    sent = conv.backend.sent[-1]
    assert sent[0].role == "system" and "helpful" in sent[0].content
    assert sent[1:] == [Message("user", "hi"), Message("assistant", "one two three four five "), Message("user", "again")]
    info, turns = History().get(conv.conv_id)
    assert info.title == "hi" and [t.content for t in turns] == [t.content for t in conv.turns]


def test_sampling_stack_prompt_then_set(conv):
    assert conv.params.temperature == 0.7  # default.md's 0.7 sits above the defaults' 0
    assert conv.param_sources()["temperature"] == "prompt default"
    conv.switch_prompt("coder")
    assert conv.params.temperature == 0.2 and conv.params.top_p == 0.9
    assert conv.set_param("temperature", "1.3") == 1.3 and conv.param_sources()["temperature"] == "set"
    conv.switch_prompt("concise")  # /set survives a prompt switch
    assert conv.params.temperature == 1.3 and conv.params.max_tokens == 256
    assert conv.set_param("temperature", "default") == 0.5
    assert conv.set_param("seed", "42") == 42 and conv.set_param("seed", "none") is None
    assert conv.set_param("stop", "\\n\\n") == ("\n\n",)
    assert conv.set_param("stop", '["User:", "###"]') == ("User:", "###")
    assert conv.set_param("stop", "none") == ()


@pytest.mark.parametrize("name,value,message", [
    ("temperature", "-1", "temperature must be >= 0"),
    ("top_p", "0", r"top_p must be in \(0, 1\]"),
    ("top_k", "-3", "top_k must be >= 0"),
    ("top_k", "2.5", "top_k must be an integer, got '2.5'"),
    ("temperature", "hot", "temperature must be a number, got 'hot'"),
    ("temprature", "1", "unknown parameter 'temprature'; did you mean 'temperature'"),
    ("max_tokens", "0", r"max_tokens must be in \[1, 2\^31\)"),
])
def test_bad_set_values_are_usage_errors_and_change_nothing(conv, name, value, message):
    before = conv.params
    with pytest.raises(UsageError, match=message):
        conv.set_param(name, value)
    assert conv.params == before


def test_prompt_settings_are_the_sessions(conv):
    assert conv.prompt.params["temperature"] == 0.7
    # defaults come from config/flags-as-defaults; the prompt file's settings sit above them
    assert Conversation(WordBackend(), "w", "default", defaults=SamplingParams(temperature=0.1), save=False).params.temperature == 0.7
    flagged = Conversation(WordBackend(), "w", "default", overrides={"temperature": 0.1}, save=False)
    assert flagged.params.temperature == 0.1  # flags given as overrides beat the prompt


def test_undo_retry_reset(conv):
    reply_of(conv, "first")
    reply_of(conv, "second")
    assert conv.undo() == "second" and len(conv.turns) == 2
    conv.backend.reply = "a different reply"
    assert "".join(c.text for c in conv.retry()) == "a different reply "
    assert [t.content for t in conv.turns] == ["first", "a different reply "]
    stored = History().get(conv.conv_id)[1]
    assert [t.content for t in stored] == ["first", "a different reply "]  # undo and the replaced reply left the store
    old = conv.conv_id
    conv.reset()
    assert conv.turns == [] and conv.conv_id is None
    reply_of(conv, "new")
    assert conv.conv_id != old and len(History().list()) == 2
    conv.reset()
    with pytest.raises(UsageError, match="nothing to undo"):
        conv.undo()
    with pytest.raises(UsageError, match="nothing to retry"):
        list(conv.retry())


def test_empty_message_is_refused(conv):
    with pytest.raises(UsageError, match="empty"):
        list(conv.send("   \n"))
    assert conv.turns == []


def test_caller_stopping_keeps_partial_reply_marked_interrupted(conv):
    stream = conv.send("tell me")
    assert next(stream).text == "one "
    stream.close()
    assert conv.turns[-1].content == "one " and conv.turns[-1].finish_reason == "interrupted"
    assert History().get(conv.conv_id)[1][-1].finish_reason == "interrupted"


def test_cancel_event_stops_within_a_token(conv):
    out = []
    for chunk in conv.send("go"):
        out.append(chunk)
        conv.cancel.set()
    assert out[-1].finish_reason == "interrupted" and conv.turns[-1].finish_reason == "interrupted"
    assert conv.backend.emitted == 1
    reply_of(conv, "next")  # the next turn starts with cancel cleared
    assert conv.turns[-1].finish_reason == "stop"


def test_keyboard_interrupt_keeps_partial_and_propagates(conv):
    conv.backend.fail_after, conv.backend.fail = 2, KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        reply_of(conv, "go")
    assert conv.turns[-1].content == "one two " and conv.turns[-1].finish_reason == "interrupted"


def test_http_error_mid_stream_keeps_partial_marked_incomplete(conv):
    conv.backend.fail_after = 3
    with pytest.raises(BackendError):
        reply_of(conv, "go")
    assert [t.role for t in conv.turns] == ["user", "assistant"]
    assert conv.turns[-1].content == "one two three " and conv.turns[-1].finish_reason == "error"


def test_error_before_any_text_leaves_history_as_before(conv):
    reply_of(conv, "keep me")
    before = list(conv.turns)
    for fail in (BackendError("connection refused"), NumericalError("NaN logits")):
        conv.backend.fail_after, conv.backend.fail = 0, fail
        with pytest.raises(type(fail)):
            reply_of(conv, "lost")
        assert conv.turns == before
    conv.backend.fail_after, conv.backend.fail = 2, NumericalError("NaN logits")
    with pytest.raises(NumericalError):
        reply_of(conv, "lost too")  # a numerical error ends the turn; the history is what it was
    assert conv.turns == before
    assert [t.content for t in History().get(conv.conv_id)[1]] == [t.content for t in before]


def test_stream_without_finish_chunk_counts_as_stop_and_sync_errors_roll_back(conv):
    class Plain(WordBackend):
        def stream_chat(self, messages, params, *, chat_template=None, cancel=None):
            if self.reply == "boom":
                raise BackendError("refused before streaming")  # not a generator: raises at the call
            return iter([Chunk("just text")])

    c = Conversation(Plain(), "w", "default")
    reply_of(c, "hi")
    assert c.turns[-1].finish_reason == "stop" and c.turns[-1].content == "just text"
    c.backend.reply = "boom"
    with pytest.raises(BackendError):
        reply_of(c, "again")
    assert len(c.turns) == 2 and len(History().get(c.conv_id)[1]) == 2


def test_failed_turn_does_not_move_the_window():
    backend = WordBackend(reply="r " * 10, context=90)
    c = Conversation(backend, "w", "concise", defaults=SamplingParams(max_tokens=10), save=False)
    for i in range(3):
        reply_of(c, f"message number {i} " + "pad " * 10)
    first, c.notices[:] = c.first, []
    backend.fail_after, backend.fail = 0, BackendError("down")
    with pytest.raises(BackendError):
        reply_of(c, "one more " + "pad " * 30)
    assert len(backend.sent[-1]) == 2  # this turn had to drop exchanges...
    assert c.first == first and len(c.turns) == 6 and c.notices == []  # ...but it failed, so nothing moved


def test_template_raise_exception_leaves_history_unchanged():
    refuse = "{{ raise_exception('I only talk about cheese') }}"
    c = Conversation(WordBackend(template=refuse), "w", "default")
    with pytest.raises(LoadError, match="refused the conversation: I only talk about cheese"):
        reply_of(c, "hello")
    assert c.turns == [] and c.conv_id is None


def test_template_without_system_role_is_told_once():
    no_system = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
                 "{% endif %}{{ m.role }}: {{ m.content }} {% endfor %}")
    c = Conversation(WordBackend(template=no_system), "w", "concise")
    reply_of(c, "one")
    reply_of(c, "two")
    assert len([n for n in c.notices if "system prompt was put into the first user message" in n]) == 1


def test_context_budget_drops_oldest_and_keeps_system():
    backend = WordBackend(reply="r " * 10, context=90)
    c = Conversation(backend, "w", "concise", defaults=SamplingParams(max_tokens=10))
    for i in range(8):
        reply_of(c, f"message number {i} " + "pad " * 5)
        sent = backend.sent[-1]
        assert sent[0].role == "system" and sent[0].content == c.system  # always there
        assert sent[-1].content.startswith(f"message number {i}")
        assert backend.count_tokens(sent) + backend.params[-1].max_tokens <= 90
    drops = [n for n in c.notices if n.startswith("dropped")]
    assert drops and all(n.endswith("to fit 90-token context") for n in drops)
    assert len(c.turns) == 16  # the transcript keeps everything
    assert "message number 0" in c.transcript()


def test_system_plus_message_too_big_names_both_sizes():
    c = Conversation(WordBackend(context=40), "w", "concise", save=False)
    with pytest.raises(UsageError, match=r"the system prompt \(\d+ tokens\) and your message \(\d+ tokens\) do not fit the 40-token context"):
        reply_of(c, "word " * 50)
    assert c.turns == []


def test_max_tokens_capped_at_what_is_left():
    backend = WordBackend(reply="w " * 100, context=60)
    c = Conversation(backend, "w", "concise", system="Short.", defaults=SamplingParams(max_tokens=1000))
    reply_of(c, "hi")
    used = backend.count_tokens(backend.sent[-1])
    assert backend.params[-1].max_tokens == 60 - used
    assert c.turns[-1].finish_reason == "length"


def test_context_policy_error():
    backend = WordBackend(reply="r " * 10, context=60)
    c = Conversation(backend, "w", "concise", system="S.", context_policy="error", defaults=SamplingParams(max_tokens=5))
    with pytest.raises(UsageError, match="context holds 60; /undo or /reset, or use --context-policy drop-oldest"):
        for i in range(10):
            reply_of(c, f"message {i} with some padding words")
    assert c.turns[-1].role == "assistant"  # the refused message was not added
    with pytest.raises(UsageError, match="context policy must be one of"):
        Conversation(backend, "w", "concise", context_policy="yolo")


def test_switch_and_reload_prompt_keep_the_conversation(conv):
    folder = settings.prompts_dir()
    folder.mkdir(parents=True)
    path = folder / "mine.md"
    path.write_text("---\ntemperature: 0.3\n---\nVersion one.")
    reply_of(conv, "hi")
    conv.switch_prompt("mine")
    assert conv.system == "Version one." and conv.params.temperature == 0.3 and len(conv.turns) == 2
    path.write_text("---\ntemperature: 0.4\n---\nVersion two, {{ who }}.")
    with pytest.raises(LoadError, match=r"mine.md:4: undefined variable 'who'"):
        conv.reload_prompt()
    assert conv.system == "Version one." and conv.params.temperature == 0.3  # the previous prompt stays in effect
    conv.variables["who"] = "friend"
    conv.reload_prompt()
    assert conv.system == "Version two, friend." and conv.params.temperature == 0.4
    reply_of(conv, "and now?")
    assert conv.backend.sent[-1][0].content == "Version two, friend."
    assert History().get(conv.conv_id)[0].system == "Version two, friend."
    with pytest.raises(LoadError):
        path.write_text("---\nbogus: 1\n---\nx")
        conv.reload_prompt()
    assert conv.system == "Version two, friend."


def test_set_system(conv):
    conv.set_system("You are a pirate.")
    reply_of(conv, "ahoy")
    assert conv.backend.sent[-1][0] == Message("system", "You are a pirate.")
    conv.set_system("")
    reply_of(conv, "plain")
    assert conv.backend.sent[-1][0].role == "user"


def test_no_save_and_explicit_save_and_load():
    c = Conversation(WordBackend(), "words", "default", save=False)
    reply_of(c, "secret")
    assert c.history is None and not (settings.data_dir() / "history.db").exists()
    cid = c.save("My title")
    assert History().get(cid)[0].title == "My title" and History().get(cid)[0].turn_count == 2
    reply_of(c, "after save")  # saving stays on after /save
    fresh = Conversation(WordBackend(reply="resumed"), "other-model", "coder")
    info = fresh.load(cid)
    assert info.id == cid and [t.content for t in fresh.turns][:3] == ["secret", "one two three four five ", "after save"]
    assert any("was with words" in n for n in fresh.notices)
    assert fresh.prompt.name == "default"
    reply_of(fresh, "continuing")
    assert History().get(cid)[0].turn_count == 6
    assert [m.content for m in fresh.backend.sent[-1][1:3]] == ["secret", "one two three four five "]
    assert fresh.backend.sent[-1][0].content == History().get(cid)[0].system  # the stored system prompt, not coder's


def test_store_failure_mid_chat_warns_and_goes_on(tmp_path):
    c = Conversation(WordBackend(), "w", "default")
    reply_of(c, "saved")
    c.history.db.close()  # the store goes away under us (disk pulled, file locked...)
    reply_of(c, "not saved")
    assert len(c.turns) == 4 and any("without saving" in n for n in c.notices)


def test_lone_surrogates_and_transcript(conv):
    reply_of(conv, "bad \udcff input")
    assert conv.turns[0].content == "bad \ufffd input"
    md = conv.transcript()
    assert "**User:**" in md and "bad \ufffd input" in md


def test_corrupt_store_warns_at_start():
    path = settings.data_dir() / "history.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage" * 50)
    c = Conversation(WordBackend(), "w", "default")
    assert c.history is None and any("will not be saved" in n for n in c.notices)
    reply_of(c, "still chatting")
    assert path.read_bytes() == b"garbage" * 50
    with pytest.raises(StoreError):
        c.save()


def test_parse_param_helpers():
    assert parse("top_k", " 40 ") == 40 and parse("min_p", "0.05") == 0.05
    assert parse("seed", "random") is None


def test_token_usage(conv):
    used, ctx = conv.token_usage()
    assert ctx == 200 and used == conv.backend.count_tokens([Message("system", conv.system)])
    reply_of(conv, "hi")
    assert conv.token_usage()[0] > used


def test_concurrent_cancel_from_another_thread(conv):
    conv.backend.reply = "w " * 50
    timer = threading.Timer(0.0, conv.cancel.set)
    chunks = []
    for chunk in conv.send("go"):
        chunks.append(chunk)
        if len(chunks) == 3:
            timer.start()
            timer.join()
    assert chunks[-1].finish_reason == "interrupted"


def test_params_are_built_once_per_change(conv):
    """The toolbar reads conv.params at every redraw: the same object until a setting changes."""
    first = conv.params
    assert conv.params is first
    conv.set_param("temperature", "0.2")
    assert conv.params is not first and conv.params.temperature == 0.2 and conv.params is conv.params
