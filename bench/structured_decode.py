"""Decode speed with and without the JSON mask of structured output, on real models (not a test).

    .venv/bin/python bench/structured_decode.py                          # SmolLM2 and Qwen2.5-Coder from the store
    .venv/bin/python bench/structured_decode.py --model PATH --tokens 256 --runs 5

Each run prefills the same prompt and decodes --tokens tokens greedily, once plain and once under the llguidance
mask of a JSON Schema (an array of at least 60 small objects, so the grammar cannot end before --tokens), alternating,
medians of --runs. EOS is banned in the plain runs so both decode the same number of tokens. It reports tok/s both
ways, the difference per token, and the mask's own time per token (process + accept, timed inside the processor),
which is the direct measure: on a busy 2-core machine the tok/s difference is noisier than the mask itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

SCHEMA = {"type": "array", "minItems": 60, "items": {
    "type": "object", "additionalProperties": False, "required": ["name", "age", "city"],
    "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
                   "city": {"type": "string", "maxLength": 24}}}}
PROMPT = "List sixty people as a JSON array of objects with name, age and city."


class Timed:
    """A processor wrapped to time its own calls."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def process(self, logits):
        t = time.perf_counter()
        out = self.inner.process(logits)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out

    def accept(self, token):
        t = time.perf_counter()
        self.inner.accept(token)
        self.seconds += time.perf_counter() - t

    def is_done(self):
        return self.inner.is_done()


class NoEos:
    """Bans EOS, so a plain run decodes as many tokens as a masked one."""

    def __init__(self, eos):
        self.eos = sorted(eos)

    def process(self, logits):
        logits[self.eos] = float("-inf")
        return logits

    def accept(self, token):
        pass

    def is_done(self):
        return False


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="model folders or store names (repeatable)")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", default="off", choices=("auto", "on", "off"))
    a = p.parse_args(argv)

    from chatcli.backends.local import LocalBackend
    from chatcli.engine.generate import stream_generate
    from chatcli.engine.grammar import GrammarProcessor, compile_grammar
    from chatcli.engine.sampling import make_sampler
    from chatcli.types import Message

    grammar = compile_grammar("json_schema", SCHEMA)
    print("model vocab compiled plain_tok_s masked_tok_s diff_ms_per_token mask_ms_per_token tokens")
    for name in a.model or ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]:
        backend = LocalBackend(compile=a.compile, threads=a.threads)
        backend.load(name)
        tok, model = backend.tokenizer, backend.model
        ids, _ = backend._chat_ids([Message("user", PROMPT)], None)

        def run(processor, model=model, tok=tok, ids=ids) -> tuple[float, int]:
            chunks = list(stream_generate(model, tok, ids, sampler=make_sampler(0.0, 1.0, 0, 0.0, 0),
                                          max_tokens=a.tokens, processors=[processor]))
            s = chunks[-1].stats
            return s.decode_tps, s.completion_tokens

        GrammarProcessor(tok, grammar)  # builds the tokenizer's llguidance index once, outside the timing
        plain, masked, mask_ms, n = [], [], [], 0
        for _ in range(a.runs):
            tps, n = run(NoEos(tok.eos_token_ids))
            plain.append(tps)
            timed = Timed(GrammarProcessor(tok, grammar))
            tps, n_masked = run(timed)
            masked.append(tps)
            mask_ms.append(timed.seconds / max(1, timed.calls) * 1e3)
            n = min(n, n_masked)
        pt, mt = statistics.median(plain), statistics.median(masked)
        print(f"{backend.model_path.name} {tok.vocab_size} {backend.compiled} {pt:.1f} {mt:.1f} "
              f"{(1 / mt - 1 / pt) * 1e3:.3f} {statistics.median(mask_ms):.3f} {n}", flush=True)
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
