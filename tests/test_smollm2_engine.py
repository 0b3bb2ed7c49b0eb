"""Integration: our engine on the real SmolLM2-135M-Instruct against transformers on the same folder (float32)."""

from __future__ import annotations

import pytest
import torch

from chatcli.engine.generate import generate_step
from chatcli.engine.loader import load_model
from chatcli.engine.sampling import make_sampler
from chatcli.engine.tokenizer import load_tokenizer

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

PROMPT = "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def models(smollm2_f32_dir):
    ours = load_model(smollm2_f32_dir, "float32", max_seq_len=512)
    ref = transformers.AutoModelForCausalLM.from_pretrained(smollm2_f32_dir, dtype=torch.float32).eval()
    return ours, ref, load_tokenizer(smollm2_f32_dir)


def test_logits_within_1e3(models):
    ours, ref, tok = models
    ids = torch.tensor([tok.encode(PROMPT)])
    with torch.no_grad():
        expected = ref(ids).logits
    assert (ours(ids, 0) - expected).abs().max().item() < 1e-3


def test_same_32_greedy_tokens(models):
    ours, ref, tok = models
    ids = tok.encode(PROMPT)
    with torch.no_grad():
        expected = ref.generate(torch.tensor([ids]), max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=2)[0, len(ids):].tolist()
    steps = generate_step(ours, ids, sampler=make_sampler(temperature=0))
    got = [next(steps)[0] for _ in range(32)]
    assert got == expected
    assert "Paris" in tok.decode(got)
