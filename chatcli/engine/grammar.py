"""Structured output: a logits processor that lets through only the tokens a grammar allows (llguidance).

A JSON Schema, "any JSON object", a Lark grammar or a GBNF one (llguidance converts it) becomes one llguidance
grammar; a GrammarProcessor holds a matcher over it for one reply, masks each step's logits to the tokens that keep
the text inside the grammar, and says it is done once the grammar is complete. EOS is allowed only where the grammar
accepts, so the reply cannot end half-way through the JSON (only max_tokens can cut it).

Why llguidance (bench/grammar_mask.py, AMD EPYC Zen 5, 2 cores, one thread): its mask costs 0.03-0.05 ms a token
over the 49k and the 151k vocabulary. xgrammar's is faster (0.003-0.024 ms) and outlines-core's in between
(0.01-0.12 ms), but all three are under 0.5 % of a decode step (25-60 ms), so speed does not decide. llguidance needs
no compile per schema (outlines-core took 4.5-8 s for {"type": "object"}), names a keyword it cannot enforce where
xgrammar silently drops it ({"not": ...}, an unknown format), takes Lark and GBNF as well, and is one 8 MB wheel
(xgrammar brings triton, 1 GB).
"""

from __future__ import annotations

import json
import weakref

import numpy as np
import torch

from chatcli.engine.errors import GrammarError

KINDS = ("json_schema", "lark", "gbnf")
# Between JSON tokens: at most one newline, then up to 8 spaces (pretty-printing to depth 4 fits). Free whitespace
# would let a weak model (or a random one at temperature 1) pad forever inside a valid document; none at all reads
# unnaturally to a model trained on indented JSON; blank lines are never needed.
JSON_OPTIONS = {"whitespace_pattern": r"\n? {0,8}"}
ANY_OBJECT = {"type": "object"}

_BIAS = np.array([-np.inf, 0.0], dtype=np.float32)  # by the allowed bit
_llg_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # our Tokenizer -> its LLTokenizer


def compile_grammar(kind: str, source) -> str:
    """The llguidance grammar for SOURCE: a JSON Schema (a dict, or its JSON text) for "json_schema", grammar text
    for "lark" or "gbnf". GrammarError names what is wrong, including a schema keyword llguidance does not support
    (it is named, never ignored)."""
    import llguidance

    if kind == "json_schema":
        if isinstance(source, str):
            try:
                source = json.loads(source)
            except json.JSONDecodeError as e:
                raise GrammarError(f"the JSON Schema is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        if not isinstance(source, (dict, bool)):
            raise GrammarError(f"a JSON Schema must be an object (or true/false), got {type(source).__name__}")
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(source, defaults=JSON_OPTIONS)
        except ValueError as e:
            raise GrammarError(f"the JSON Schema cannot be used: {e}") from None
    elif kind == "lark":
        grammar = llguidance.LLMatcher.grammar_from_lark(source)
    elif kind == "gbnf":
        try:
            grammar = llguidance.grammar_from("gbnf", source)
        except ValueError as e:
            raise GrammarError(f"the GBNF grammar cannot be read: {e}") from None
    else:
        raise GrammarError(f"unknown grammar kind {kind!r}; use one of {', '.join(KINDS)}")
    bad, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if bad:
        raise GrammarError(_tidy(messages[0] if messages else "invalid grammar", kind))
    return grammar


def _tidy(message: str, kind: str) -> str:
    """llguidance's error in one line, said of the thing the user wrote."""
    what = {"json_schema": "the JSON Schema", "lark": "the Lark grammar", "gbnf": "the GBNF grammar"}[kind]
    return f"{what} cannot be used: " + " ".join(message.split())


def _sentencepiece_wrapper(tok):
    """An llguidance TokenizerWrapper over a sentencepiece Tokenizer: each piece's bytes (▁ is a space, <0xNN> a
    byte), control tokens as empty."""
    from llguidance import TokenizerWrapper

    sp = tok._sp
    pieces = []
    for i in range(tok.vocab_size):
        piece = sp.IdToPiece(i)
        if sp.IsByte(i):
            pieces.append(bytes([int(piece[3:5], 16)]))
        elif sp.IsControl(i) or sp.IsUnknown(i):
            pieces.append(b"")
        else:
            pieces.append(piece.replace("\u2581", " ").encode("utf-8"))

    class Source:
        eos_token_id = min(tok.eos_token_ids) if tok.eos_token_ids else 0
        bos_token_id = tok.bos_token_id
        tokens = pieces
        special_token_ids = [i for i in range(tok.vocab_size) if sp.IsControl(i)]

        def __call__(self, text: str) -> list[int]:
            return sp.EncodeAsIds(text)

    return TokenizerWrapper(Source())


def llg_tokenizer(tok):
    """The llguidance view of our Tokenizer TOK (built once per tokenizer: it indexes the whole vocabulary)."""
    import llguidance

    found = _llg_tokenizers.get(tok)
    if found is None:
        eos = sorted(tok.eos_token_ids) or None
        if tok._hf is not None:
            found = llguidance.LLTokenizer(tok._hf.to_str(), n_vocab=tok.vocab_size, eos_token=eos)
        else:
            found = llguidance.LLTokenizer(_sentencepiece_wrapper(tok), n_vocab=tok.vocab_size, eos_token=eos)
        _llg_tokenizers[tok] = found
    return found


class GrammarProcessor:
    """A LogitsProcessor (engine/generate.py) that keeps one reply inside GRAMMAR (from compile_grammar)."""

    def __init__(self, tokenizer, grammar: str):
        import llguidance

        self.llg = llg_tokenizer(tokenizer)
        self.matcher = llguidance.LLMatcher(self.llg, grammar, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(" ".join(self.matcher.get_error().split()))
        self.words = np.zeros((self.llg.vocab_size + 31) // 32, dtype=np.int32)  # one bit per token, 1 = allowed
        self.bits: np.ndarray | None = None  # one byte per logit row, 1 = allowed

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """LOGITS [V] with every token the grammar forbids at -inf; rows past the tokenizer's vocabulary (the
        embedding's padding) are never allowed."""
        self.matcher.unsafe_compute_mask_ptr(self.words.ctypes.data, self.words.nbytes)
        if self.matcher.is_error():
            raise GrammarError(f"structured output failed: {' '.join(self.matcher.get_error().split())}")
        rows = logits.shape[-1]
        if self.bits is None or len(self.bits) != rows:
            self.bits = np.zeros(rows, dtype=np.uint8)  # 0 stays in the padding rows
        n = min(rows, self.llg.vocab_size)
        self.bits[:n] = np.unpackbits(self.words.view(np.uint8), bitorder="little")[:n]
        # Adding a 0/-inf bias looked up from the bits: measured over 151k tokens it is about twice as fast as
        # masked_fill or where with a bool mask (a select per element), and it leaves the input as it was.
        return logits + torch.from_numpy(_BIAS.take(self.bits))

    def accept(self, token: int) -> None:
        """Advance the matcher past TOKEN."""
        self.matcher.consume_token(token)

    def is_done(self) -> bool:
        """The grammar is complete: nothing but EOS may follow."""
        return self.matcher.is_stopped()

    def is_complete(self) -> bool:
        """The text so far is a whole sentence of the grammar (it may end here)."""
        return self.matcher.is_accepting()
