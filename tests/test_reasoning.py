"""Reasoning kept apart from the answer: the markers, the streaming splitter, and the local backend on a tiny model
with Qwen3's real tokenizer and chat template (a logits processor makes it write `<think>...</think>answer`)."""

from __future__ import annotations

import pytest
import torch

from chatcli.backends.local import LocalBackend
from chatcli.engine.tokenizer import load_tokenizer
from chatcli.reasoning import Markers, ThinkingBudget, find_markers, opens_in_prompt, split_text, supports_switch
from chatcli.types import Chunk, Message, SamplingParams
from tests.tinymodels import CHATML, QWEN3_TEMPLATE

THINK = Markers("<think>", "</think>")
GREEDY = SamplingParams(temperature=0.0, max_tokens=200)
REPLY = "<think>\nThe user wants a greeting.\nSay hello.\n</think>\n\nHello there!\n\nBye."
WANT = ("The user wants a greeting.\nSay hello.", "Hello there!\n\nBye.")


def test_markers_come_from_the_tokenizer_or_the_template_not_the_model_name():
    qwen3 = QWEN3_TEMPLATE.read_text()
    assert find_markers(qwen3) == THINK
    assert find_markers(None, ["<|im_end|>", "<think>", "</think>"]) == THINK
    assert find_markers(CHATML, ["<|im_end|>"]) is None
    assert supports_switch(qwen3) and not supports_switch(CHATML)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 1000])
def test_split_across_any_chunking_gives_the_whole_text_split(size):
    from chatcli.reasoning import split_chunks

    pieces = [REPLY[i:i + size] for i in range(0, len(REPLY), size)]
    chunks = [Chunk(p) for p in pieces[:-1]] + [Chunk(pieces[-1], finish_reason="stop")]
    out = list(split_chunks(chunks, THINK))
    assert ("".join(c.reasoning for c in out), "".join(c.text for c in out)) == WANT
    assert out[-1].finish_reason == "stop"
    assert split_text(REPLY, THINK) == WANT


def test_a_reply_that_never_closes_its_thinking_is_all_reasoning():
    assert split_text("<think>\nstill going and going\n", THINK) == ("still going and going", "")
    assert split_text("<thi", THINK) == ("", "<thi")  # an unfinished marker that turned out to be text


def test_a_template_that_opens_thinking_in_the_prompt():
    prompt = "<|User|>hi<|Assistant|><think>\n"
    assert opens_in_prompt(prompt, THINK)
    assert not opens_in_prompt(prompt + "\n</think>\n\n", THINK)  # Qwen3 with enable_thinking=False
    assert split_text("reasons\n</think>\n\nanswer", THINK, thinking=True) == ("reasons", "answer")


def test_no_markers_in_the_reply_is_all_answer():
    assert split_text("Hello <think> is a tag.", THINK) == ("", "Hello <think> is a tag.")


class Script:
    """Forces TOKENS one after another, then ends the reply."""

    def __init__(self, tokens):
        self.tokens, self.heard = list(tokens), []

    def process(self, logits):
        forced = torch.full_like(logits, float("-inf"))
        forced[self.tokens[min(len(self.heard), len(self.tokens) - 1)]] = 0.0
        return forced

    def accept(self, token):
        self.heard.append(token)

    def is_done(self):
        return len(self.heard) >= len(self.tokens)


class ScriptedBackend(LocalBackend):
    """The local backend with one more logits processor: the test's script, after the backend's own."""

    script = None

    def _generate(self, ids, params, cancel, processors=()):
        return super()._generate(ids, params, cancel, [*processors, self.script] if self.script else processors)


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_dir):
    backend = ScriptedBackend(compile="off")
    backend.load(str(tiny_qwen3_dir))
    yield backend
    backend.close()


def test_local_backend_yields_reasoning_and_answer_apart(qwen3, tiny_qwen3_dir):
    tok = load_tokenizer(tiny_qwen3_dir)
    qwen3.script = Script(tok.encode(REPLY))
    chunks = list(qwen3.stream_chat([Message("user", "hi")], GREEDY))
    assert ("".join(c.reasoning for c in chunks), "".join(c.text for c in chunks)) == WANT
    assert chunks[-1].finish_reason == "stop"
    assert not any(c.reasoning and c.text for c in chunks[:-1])  # token by token, each piece is one or the other


def test_thinking_cut_off_by_max_tokens_stays_reasoning(qwen3, tiny_qwen3_dir):
    tok = load_tokenizer(tiny_qwen3_dir)
    qwen3.script = Script(tok.encode(REPLY))
    chunks = list(qwen3.stream_chat([Message("user", "hi")], GREEDY.with_(max_tokens=6)))
    assert chunks[-1].finish_reason == "length"
    assert "".join(c.text for c in chunks) == ""
    assert "".join(c.reasoning for c in chunks) == tok.decode(tok.encode(REPLY)[:6]).removeprefix("<think>").strip("\n")


class Listener:
    """Hears the tokens, changes nothing."""

    def __init__(self):
        self.heard = []

    def process(self, logits):
        return logits

    def accept(self, token):
        self.heard.append(token)

    def is_done(self):
        return False


def test_think_budget_forces_the_closing_marker(qwen3, tiny_qwen3_dir):
    tok = load_tokenizer(tiny_qwen3_dir)
    close = tok.encode("</think>")
    qwen3.script = None
    # As when the prompt opened the thinking (thinking=True): the random model thinks, and is stopped after 3 tokens.
    budget, heard = ThinkingBudget(3, tok.encode("<think>"), close, thinking=True), Listener()
    prompt = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n")
    list(qwen3._generate(prompt, GREEDY.with_(max_tokens=12), None, [budget, heard]))
    assert heard.heard[3:3 + len(close)] == close and close[0] not in heard.heard[:3]
    assert budget.spent == 3 and budget.done


def test_think_budget_through_stream_chat(qwen3, tiny_qwen3_dir):
    tok = load_tokenizer(tiny_qwen3_dir)
    qwen3.script = None
    chunks = list(qwen3.stream_chat([Message("user", "hi")], GREEDY.with_(max_tokens=30),
                                    chat_template=QWEN3_TEMPLATE.read_text() + "<think>\n", think_budget=4))
    reasoning = "".join(c.reasoning for c in chunks)
    assert 1 <= len(tok.encode(reasoning)) <= 5  # four tokens, less the newlines the splitter drops


def test_think_off_renders_enable_thinking_false_and_earlier_reasoning_goes_to_the_template(qwen3, tiny_qwen3_dir):
    tok = load_tokenizer(tiny_qwen3_dir)
    ids, rendered = qwen3._chat_ids([Message("user", "hi")], None, None, False)
    assert rendered.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    qwen3.script = Script(tok.encode("Hello."))
    chunks = list(qwen3.stream_chat([Message("user", "hi")], GREEDY, think=False))
    assert "".join(c.text for c in chunks) == "Hello." and not any(c.reasoning for c in chunks)
    # The last reply's reasoning is shown to the template, which (Qwen3's) keeps it only after the last user turn.
    convo = [Message("user", "hi"), Message("assistant", "Hello.", reasoning="greet them")]
    assert "<think>\ngreet them\n</think>" in qwen3._chat_ids(convo, None)[1].text
    assert "greet them" not in qwen3._chat_ids([*convo, Message("user", "again")], None)[1].text


def test_a_template_without_a_switch_says_so_once(qwen3, tiny_qwen3_dir):
    tok = load_tokenizer(tiny_qwen3_dir)
    qwen3.script = Script(tok.encode("Hi."))
    first = list(qwen3.stream_chat([Message("user", "hi")], GREEDY, chat_template=CHATML, think=False))
    second = list(qwen3.stream_chat([Message("user", "hi")], GREEDY, chat_template=CHATML, think=False))
    assert any("thinking" in n.text for c in first for n in c.notices)
    assert not any(c.notices for c in second)


def test_a_conversation_saves_reasoning_apart_and_the_next_turn_reuses_the_cache(qwen3, tiny_qwen3_dir, tmp_path):
    from chatcli.history import History, to_markdown
    from chatcli.session import Conversation

    tok = load_tokenizer(tiny_qwen3_dir)
    store = History(tmp_path / "history.db")
    conv = Conversation(qwen3, "tiny-qwen3", "concise", system="Be brief.", history=store,
                        overrides={"temperature": 0, "max_tokens": 60})
    qwen3.script = Script(tok.encode(REPLY))
    first = list(conv.send("hi"))
    assert conv.turns[-1].content == WANT[1] and conv.turns[-1].reasoning == WANT[0]
    first_prompt = first[-1].stats.prompt_tokens
    info, turns = store.get(conv.conv_id)
    assert [t.reasoning for t in turns] == ["", WANT[0]]
    assert "> The user wants a greeting." in to_markdown(info, turns)
    # Qwen3's template drops the first reply's reasoning on the second turn: the cache is reused up to where the
    # reply began (the first prompt), not beyond it.
    qwen3.script = Script(tok.encode("Fine."))
    second = list(conv.send("again"))
    assert second[-1].stats.cached_tokens == first_prompt
    assert "".join(c.text for c in second) == "Fine."


def _budget_run(qwen3, tok, script_ids, budget):
    """Generate with SCRIPT first and BUDGET after it, so a forced closing marker would show in the output."""
    qwen3.script = None
    script = Script(script_ids)
    prompt = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    chunks = list(qwen3._generate(prompt, GREEDY.with_(max_tokens=len(script_ids)), None, [script, budget]))
    return "".join(c.text for c in chunks)


def test_think_budget_leaves_an_answer_alone(qwen3, tiny_qwen3_dir):
    tok = load_tokenizer(tiny_qwen3_dir)
    text = "Hi there, no thinking here: a <think> tag in the answer is text, and the answer goes on and on."
    budget = ThinkingBudget(1, tok.encode("<think>"), tok.encode("</think>"), markers=THINK, decode=tok.decode)
    assert _budget_run(qwen3, tok, tok.encode(text), budget) == text
    assert budget.done and budget.spent == 0


def test_think_budget_hears_a_closing_marker_written_in_other_tokens(qwen3, tiny_qwen3_dir):
    tok = load_tokenizer(tiny_qwen3_dir)
    pieces = tok.encode("<think>\nshort\n") + tok.encode("</") + tok.encode("think") + tok.encode(">")
    ids = pieces + tok.encode("\n\nA long answer that goes on well past the budget of ten tokens, and on.")
    budget = ThinkingBudget(10, tok.encode("<think>"), tok.encode("</think>"), markers=THINK, decode=tok.decode)
    assert _budget_run(qwen3, tok, ids, budget) == tok.decode(ids)
    assert budget.done and budget.spent < 10
