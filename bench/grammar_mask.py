"""Per-token cost of a JSON-Schema token mask with llguidance, xgrammar and outlines-core (not a test).

    .venv/bin/python bench/grammar_mask.py                   # SmolLM2 (49k) and Qwen2.5-Coder (151k), from the store
    .venv/bin/python bench/grammar_mask.py --model PATH ...  # other model folders

For each tokenizer and schema, each library compiles the schema (timed once: its compile step), then walks the
tokens of one valid document: at every token it computes the mask of allowed next tokens into a bitmask (timed) and
advances by that token (not timed; it is the same token for all three). The figure that matters for decoding is
the mean mask time per token, which the engine pays on top of the forward pass. xgrammar and outlines-core are not
dependencies of chatcli: install them to run this (`pip install xgrammar outlines-core`); llguidance is the one
chatcli uses (engine/grammar.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

SCHEMAS = {
    "object": ({"type": "object"}, {"name": "Ada Lovelace", "born": 1815, "tags": ["math", "poetry"], "ok": True}),
    "person": (
        {"type": "object", "additionalProperties": False, "required": ["name", "age", "role", "email"],
         "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
                        "role": {"enum": ["admin", "user", "guest"]}, "email": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
                        "scores": {"type": "array", "items": {"type": "number"}, "maxItems": 5},
                        "address": {"type": "object", "additionalProperties": False, "required": ["city"],
                                    "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}}}},
        {"name": "Grace Hopper", "age": 85, "role": "admin", "email": "grace@navy.com", "scores": [9.5, 8, 7.25],
         "address": {"city": "Arlington", "zip": "22201"}},
    ),
}


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_llguidance(folder, tok, schema, tokens):
    import llguidance

    from chatcli.engine import grammar

    t_tok = timed(lambda: grammar.llg_tokenizer(tok))
    llg = grammar.llg_tokenizer(tok)
    grammar_text = []
    t_compile = timed(lambda: grammar_text.append(grammar.compile_grammar("json_schema", schema)))
    matcher = []
    t_compile += timed(lambda: matcher.append(llguidance.LLMatcher(llg, grammar_text[0], log_level=0)))
    m = matcher[0]
    words = np.zeros((llg.vocab_size + 31) // 32, dtype=np.int32)
    per = []
    for t in tokens:
        per.append(timed(lambda: m.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)))
        assert words[t // 32] >> (t % 32) & 1, "llguidance refused a token of the document"
        m.consume_token(t)
    return t_tok, t_compile, per


def run_xgrammar(folder, tok, schema, tokens):
    import torch
    import transformers
    import xgrammar as xgr

    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    info = []
    t_tok = timed(lambda: info.append(xgr.TokenizerInfo.from_huggingface(hf, vocab_size=tok.vocab_size,
                                                                          stop_token_ids=sorted(tok.eos_token_ids))))
    compiler = xgr.GrammarCompiler(info[0], max_threads=1)
    compiled = []
    t_compile = timed(lambda: compiled.append(compiler.compile_json_schema(json.dumps(schema))))
    m = xgr.GrammarMatcher(compiled[0])
    mask = xgr.allocate_token_bitmask(1, tok.vocab_size)
    per = []
    for t in tokens:
        per.append(timed(lambda: m.fill_next_token_bitmask(mask)))
        assert int(mask[0, t // 32]) >> (t % 32) & 1, "xgrammar refused a token of the document"
        assert m.accept_token(t)
    del torch
    return t_tok, t_compile, per


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet back to bytes (the tokenizers' ByteLevel pre-tokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def run_outlines(folder, tok, schema, tokens):
    import outlines_core as oc
    from outlines_core.json_schema import build_regex_from_schema

    dec = _byte_decoder()
    eos = min(tok.eos_token_ids)
    vocab: dict[bytes, list[int]] = {}

    def build():
        for i in range(tok.vocab_size):
            if i in tok.eos_token_ids:
                continue
            piece = tok.id_to_piece(i)
            raw = bytes(dec[c] for c in piece) if all(c in dec for c in piece) else piece.encode("utf-8")
            vocab.setdefault(raw, []).append(i)
        return oc.Vocabulary(eos, vocab)

    v = []
    t_tok = timed(lambda: v.append(build()))
    index = []
    t_compile = timed(lambda: index.append(oc.Index(build_regex_from_schema(json.dumps(schema)), v[0])))
    guide = oc.Guide(index[0])
    words = np.zeros((tok.vocab_size + 31) // 32, dtype=np.int32)
    per = []
    for t in tokens:
        per.append(timed(lambda: guide.write_mask_into(words.ctypes.data, words.size, 4)))
        assert words[t // 32] >> (t % 32) & 1, "outlines-core refused a token of the document"
        guide.advance(t)
    return t_tok, t_compile, per


LIBS = {"llguidance": run_llguidance, "xgrammar": run_xgrammar, "outlines-core": run_outlines}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="model folders or store names (repeatable)")
    p.add_argument("--lib", action="append", choices=list(LIBS), help="libraries to measure (default: all)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch

    from chatcli.engine.tokenizer import load_tokenizer
    from chatcli.store.resolve import resolve_model

    torch.set_num_threads(a.threads)
    models = a.model or ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
    print("model vocab schema library tokenizer_s compile_s mask_ms_mean mask_ms_p50 mask_ms_max tokens")
    for name in models:
        folder = resolve_model(name)
        tok = load_tokenizer(folder)
        for sname, (schema, doc) in SCHEMAS.items():
            tokens = tok.encode(json.dumps(doc, separators=(",", ":")), add_special_tokens=False)
            for lib in a.lib or list(LIBS):
                try:
                    t_tok, t_compile, per = LIBS[lib](folder, tok, schema, tokens)
                except ImportError as e:
                    print(f"{folder.name} {tok.vocab_size} {sname} {lib} not installed ({e})")
                    continue
                ms = [x * 1e3 for x in per]
                print(f"{folder.name} {tok.vocab_size} {sname} {lib} {t_tok:.3f} {t_compile:.3f} "
                      f"{statistics.mean(ms):.3f} {statistics.median(ms):.3f} {max(ms):.3f} {len(ms)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
