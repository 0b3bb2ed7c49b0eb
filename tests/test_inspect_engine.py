"""chatcli.engine.introspect on tiny random models: the numbers `chatcli inspect` shows are the model's own."""

from __future__ import annotations

import io
import json
import re

import pytest
import torch

from chatcli.engine import introspect as I
from chatcli.engine.introspect.embeddings import MultiTokenWord
from chatcli.engine.loader import load_model
from chatcli.engine.tokenizer import load_tokenizer
from tests.tinymodels import ARCHS

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    model = load_model(tiny_llama_dir, "float32", 64)
    return model, load_tokenizer(tiny_llama_dir, vocab_limit=model.config.vocab_size)


def ids_of(n=20, seed=1):
    return torch.randint(0, 300, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_attention_matches_transformers_eager(arch, tiny_model_factory):
    path = tiny_model_factory(arch)
    ours = load_model(path, "float32", 64)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    ids = ids_of(20)  # longer than the mistral (16) and gemma3 (8) test windows, so the windows matter
    probs = I.attention_probs(ours, ids)
    with torch.no_grad():
        expected = ref(torch.tensor([ids]), output_attentions=True).attentions
    assert len(probs) == len(expected)
    for layer, p in probs.items():
        assert p.shape == expected[layer][0].shape
        assert (p - expected[layer][0]).abs().max().item() < 1e-5, (arch, layer)
        assert torch.triu(p, diagonal=1).abs().max().item() == 0.0  # nothing attends to the future
        assert torch.allclose(p.sum(-1), torch.ones(p.shape[:-1]), atol=1e-5)
    for block in ours.model.layers:  # the hooks are gone: the decode path is as before
        assert not block.self_attn._forward_pre_hooks


def test_attention_of_one_layer_and_one_token(tiny):
    model, _ = tiny
    only = I.attention_probs(model, ids_of(7), [1])
    assert list(only) == [1] and only[1].shape == (model.config.num_attention_heads, 7, 7)
    single = I.attention_probs(model, [5])[0]
    assert torch.equal(single, torch.ones(model.config.num_attention_heads, 1, 1))


@pytest.mark.parametrize("T", [0.25, 0.5, 1.0, 1.5, 3.0])
def test_distribution_is_softmax_over_temperature(T):
    logits = torch.randn(500, generator=torch.Generator().manual_seed(3)) * 4
    p = I.distribution(logits, T)
    assert abs(p.sum().item() - 1) < 1e-5
    assert torch.allclose(p, torch.softmax(logits / T, -1), atol=1e-7)
    assert torch.equal(p.argsort(descending=True)[:10], logits.argsort(descending=True)[:10])  # T keeps the order


def test_temperature_zero_is_one_hot_and_entropy_orders_with_t():
    logits = torch.tensor([1.0, 3.0, 2.0])
    assert I.distribution(logits, 0).tolist() == [0.0, 1.0, 0.0]
    assert I.entropy_bits(I.distribution(logits, 0)) == 0.0
    assert I.entropy_bits(torch.full((8,), 1 / 8)) == pytest.approx(3.0)
    hs = [I.entropy_bits(I.distribution(logits, t)) for t in (0.3, 1.0, 3.0)]
    assert hs == sorted(hs)


def test_walk_steps_carry_both_distributions(tiny):
    model, tok = tiny
    prompt = tok.encode("The capital of France is")
    steps = list(I.walk(model, prompt, 0.5, steps=3, seed=7, vocab_size=tok.vocab_size))
    assert len(steps) == 3 and [s.position for s in steps] == [len(prompt), len(prompt) + 1, len(prompt) + 2]
    for s in steps:
        assert s.logits.shape == (tok.vocab_size,)  # embedding padding rows are not real tokens
        assert torch.allclose(s.probs_t1, torch.softmax(s.logits, -1), atol=1e-7)
        assert torch.allclose(s.probs_t, torch.softmax(s.logits / 0.5, -1), atol=1e-7)
        assert s.rank() == int((s.probs_t > s.probs_t[s.token]).sum()) + 1
    again = [s.token for s in I.walk(model, prompt, 0.5, steps=3, seed=7, vocab_size=tok.vocab_size)]
    assert again == [s.token for s in steps]  # the seed makes the walk reproducible
    first = model(torch.tensor([prompt]), 0)[0, -1, : tok.vocab_size]
    assert torch.allclose(steps[0].logits, first, atol=1e-5)


def test_rendered_probabilities_sum_to_one(tiny):
    from chatcli.inspectui.common import make_console
    from chatcli.inspectui.nextview import render_step

    model, tok = tiny
    step = next(I.walk(model, tok.encode("Hello world"), 1.5, seed=1, vocab_size=tok.vocab_size))
    out = io.StringIO()
    render_step(make_console(True, file=out, width=120), step, tok, top=8)
    text = out.getvalue()
    assert "\x1b" not in text
    rows = [line for line in text.splitlines() if re.search(r"\d%\s", line + " ") and ("others" in line or re.match(r"\s*\d+\s", line))]
    cols = [re.findall(r"(<?[\d.]+)%", r) for r in rows]
    assert len(rows) >= 9 and all(len(c) == 2 for c in cols)
    for k in (0, 1):
        assert sum(float(c[k].lstrip("<")) for c in cols) == pytest.approx(100, abs=0.1 * len(rows))


def test_token_spans_join_to_the_text(tiny):
    _, tok = tiny
    for text in ["Hello world", "Emoji 😀🎉 and CJK 你好世界, café naïve e\u0301", "  two\n\nlines\tand tabs ", "x"]:
        spans = I.token_spans(tok, text)
        assert "".join(s.text for s in spans) == text
        assert [s.id for s in spans] == tok.encode(text)


def test_parameter_counts_add_up(tiny_model_factory):
    from safetensors.torch import load_file

    for arch in ("llama", "qwen2"):  # untied and tied
        path = tiny_model_factory(arch)
        model = load_model(path, "float32", 16)
        report = I.parameter_report(model)
        assert sum(report.counts.values()) == report.total
        stored = sum(t.numel() for t in load_file(str(path / "model.safetensors")).values())
        assert report.total == stored  # a tied lm_head is not stored, and not counted twice
        assert report.tied == (arch == "qwen2")
        assert report.counts["unembedding"] == (0 if report.tied else model.config.vocab_size * model.config.hidden_size)
        assert report.counts["embedding"] == model.config.vocab_size * model.config.hidden_size


def test_kv_cache_bytes_match_what_the_engine_allocates(tiny_model_factory):
    for arch in sorted(ARCHS):
        model = load_model(tiny_model_factory(arch), "float32", 200)
        got, ctx = I.kv_cache_bytes(model, 200)
        allocated = sum(t.numel() * t.element_size() for layer in model.cache.layers for t in (layer.k, layer.v))
        assert (got, ctx) == (allocated, 200), arch
        half, _ = I.kv_cache_bytes(model, 200, torch.bfloat16)
        assert half * 2 == got


def test_neighbours_and_analogy(tiny):
    model, tok = tiny
    E = model.model.embed_tokens.weight
    wv = I.word_vector(tok, E, "capital")
    assert wv.ids == tok.encode(" capital") and not wv.averaged
    assert I.neighbours(E, wv.vector, 1)[0] == (wv.ids[0], pytest.approx(1.0))  # itself, when not excluded
    rows = I.neighbours(E, wv.vector, 5, exclude=set(wv.ids), limit=tok.vocab_size)
    assert wv.ids[0] not in [i for i, _ in rows] and all(i < tok.vocab_size for i, _ in rows)
    sims = [s for _, s in rows]
    assert sims == sorted(sims, reverse=True)
    with pytest.raises(MultiTokenWord) as e:
        I.word_vector(tok, E, "zzqx")
    assert e.value.options
    mean = I.word_vector(tok, E, "zzqx", mean=True)
    assert mean.averaged and torch.allclose(mean.vector, E[mean.ids].mean(0))
    a, b, c = (I.word_vector(tok, E, w) for w in ("Paris", "France", "capital"))
    v = I.analogy([(1, a), (-1, b), (1, c)])
    unit = lambda x: x / x.norm()  # noqa: E731
    assert torch.allclose(v, unit(a.vector) - unit(b.vector) + unit(c.vector), atol=1e-6)


def test_chosen_probability_for_a_reply_view():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    p, alts = I.chosen_probability(probs, 3, alternatives=2)
    assert p == pytest.approx(0.05) and [i for i, _ in alts] == [0, 1]
    assert json.dumps(alts)  # plain numbers, ready for Chunk.probs
