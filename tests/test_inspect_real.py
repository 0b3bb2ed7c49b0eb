"""inspect on the real default model (SmolLM2-135M-Instruct): the classic pictures come out as the explanation says."""

from __future__ import annotations

import pytest
import torch

from chatcli.engine import introspect as I
from chatcli.engine.loader import load_model
from chatcli.engine.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol(smollm2_dir):
    model = load_model(smollm2_dir, "float32", 64)
    return model, load_tokenizer(smollm2_dir, vocab_limit=model.config.vocab_size)


def test_embedding_geometry(smol):
    model, tok = smol
    E = model.model.embed_tokens.weight
    tower = I.word_vector(tok, E, "tower")
    near = [tok.decode([i]) for i, _ in I.neighbours(E, tower.vector, 10, exclude=set(tower.ids), limit=tok.vocab_size)]
    assert " towers" in near[:3] and " Tower" in near
    terms = [(1, I.word_vector(tok, E, "king")), (-1, I.word_vector(tok, E, "man")), (1, I.word_vector(tok, E, "woman"))]
    exclude = {i for _, wv in terms for i in wv.ids}
    best = I.neighbours(E, I.analogy(terms), 3, exclude=exclude, limit=tok.vocab_size)
    assert tok.decode([best[0][0]]) == " queen"


def test_next_token_and_temperature(smol):
    model, tok = smol
    step = next(I.walk(model, tok.encode("The capital of France is", add_special_tokens=True), 0.5, seed=1,
                       vocab_size=tok.vocab_size))
    top = step.top(1)[0][0]
    assert tok.decode([top]) == " Paris"
    assert step.probs_t[top] > step.probs_t1[top] > 0.5  # a lower temperature sharpens the favourite
    assert step.entropy_t < step.entropy_t1


def test_attention_matches_transformers_on_the_real_weights(smol, smollm2_dir):
    transformers = pytest.importorskip("transformers")
    model, tok = smol
    ids = tok.encode("The cat sat on the mat. The cat sat on the mat.", add_special_tokens=True)
    ours = I.attention_probs(model, ids)  # all 30 layers
    ref = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = ref(torch.tensor([ids]), output_attentions=True).attentions
    for layer, p in ours.items():
        assert (p - expected[layer][0]).abs().max().item() < 1e-5, layer
    report = I.parameter_report(model)
    assert report.total == sum(p.numel() for p in ref.parameters()) and report.tied
