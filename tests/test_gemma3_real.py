"""The pulled gemma-3-270m against transformers' Gemma3ForCausalLM on the same folder (float32), and `chatcli ask` on it.

Prompts run past the 512-token sliding window, and one test shrinks the ring so that a chunk wraps around it.
"""

from __future__ import annotations

import inspect
import json
import json.decoder
import subprocess
from pathlib import Path

import pytest
import torch

from chatcli.engine.generate import generate_step
from chatcli.engine.loader import load_model
from chatcli.engine.sampling import make_sampler
from chatcli.engine.tokenizer import load_tokenizer
from tests.conftest import REPO

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

CHATCLI = str(REPO / ".venv" / "bin" / "chatcli")


@pytest.fixture(scope="module")
def gemma_path(request) -> Path:
    try:
        return Path(request.getfixturevalue("gemma_dir"))
    except pytest.FixtureLookupError:
        pytest.skip("tests/realmodels.py has no gemma_dir fixture (the pulled gemma-3-270m) yet")


@pytest.fixture(scope="module")
def tok(gemma_path):
    return load_tokenizer(gemma_path)


@pytest.fixture(scope="module")
def ours(gemma_path):
    return load_model(gemma_path, "float32", max_seq_len=2048)


@pytest.fixture(scope="module")
def ref(gemma_path):
    return transformers.AutoModelForCausalLM.from_pretrained(gemma_path, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def long_ids(tok) -> list[int]:
    """About 600 tokens of fixed, varied text (a stdlib module's source): past the window of 512."""
    ids = tok.encode(inspect.getsource(json.decoder), add_special_tokens=True)[:600]
    assert len(ids) == 600
    return ids


@pytest.fixture(scope="module")
def greedy_run(ours, long_ids):
    """Our 32 greedy tokens after the long prompt (prefilled as 512 + 88) and the logits each was chosen from."""
    steps = generate_step(ours, long_ids, sampler=make_sampler(temperature=0))
    tokens, logits = zip(*(next(steps) for _ in range(32)))
    steps.close()
    return list(tokens), torch.stack(logits)  # [32], [32, V]


@pytest.fixture(scope="module")
def expected(ref, long_ids, greedy_run):
    """transformers' logits at positions 450..631 of the long prompt followed by our greedy tokens: one forward
    checks both the logits and that each greedy token is transformers' argmax too (so its greedy run is the same)."""
    x = torch.tensor([long_ids + greedy_run[0]])
    with torch.no_grad():
        return ref(x, logits_to_keep=x.shape[1] - 450).logits[0]  # [182, V]


def test_greedy_tokens_and_logits_match_reference_after_a_long_prompt(greedy_run, expected):
    tokens, logits = greedy_run
    ref_logits = expected[-33:-1]  # the positions that predicted each generated token
    assert ref_logits.argmax(-1).tolist() == tokens
    assert (logits - ref_logits).abs().max().item() < 1e-3


def test_chunks_that_wrap_a_small_ring_match_reference(ours, long_ids, expected):
    x = torch.tensor([long_ids])
    ours.setup_cache(2048, rewind=16)  # a ring of 528 slots, so the second chunk wraps around it
    try:
        ours(x[:, :450], 0, last_only=True)
        got = torch.cat([ours(x[:, 450:595], 450), *(ours(x[:, i : i + 1], i) for i in range(595, 600))], 1)[0]
    finally:
        ours.setup_cache(2048)
    assert (got - expected[:150]).abs().max().item() < 1e-3


def test_ask_answers_in_the_classic_format_and_stops_at_the_turn(gemma_path, ref, tok):
    from chatcli.templates import render_chat

    system = "What follows is a conversation between a user and a helpful AI assistant:"
    question = "What is the capital of France?"
    run = subprocess.run(
        [CHATCLI, "--models-dir", str(gemma_path.parent), "ask", "--model", gemma_path.name, "--json",
         "--dtype", "float32", "--temperature", "0", "--repeat-penalty", "1", "--max-tokens", "48", "-s", system, question],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    reply = json.loads(run.stdout)
    assert reply["finish_reason"] == "stop"
    assert reply["text"].strip() and "User:" not in reply["text"]
    # The same reply as transformers continuing the classic transcript, up to where it starts the next user turn.
    rendered = render_chat(None, [{"role": "system", "content": system}, {"role": "user", "content": question}])
    assert rendered.text.endswith(f"User: {question}\nAI Assistant:")
    ids = [tok.bos_token_id, *tok.encode(rendered.text)]
    with torch.no_grad():
        n = reply["usage"]["completion_tokens"] + 2  # the reply and the tokens of the stop string that ended it
        out = ref.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0)[0, len(ids):]
    continuation = tok.decode([t for t in out.tolist() if t not in tok.eos_token_ids])
    assert "\nUser:" in continuation  # the base model does write the next turn: the stop string is what ends the reply
    assert reply["text"] == continuation.split("\nUser:")[0]
