"""`inspect neighbours` and `inspect analogy`."""

from __future__ import annotations

from chatcli.errors import UsageError
from chatcli.inspectui.load import Common, console, need_text, open_model


def _words_vectors(tokenizer, E, words: list[str], mean: bool):
    from chatcli.engine.introspect.embeddings import MultiTokenWord, word_vector

    out = []
    for w in words:
        try:
            out.append(word_vector(tokenizer, E, w, mean))
        except MultiTokenWord as e:
            if not e.options:
                raise UsageError(f"{w!r} has no tokens; give a word") from None
            split = " or ".join("[" + ", ".join(repr(tokenizer.decode([i])) for i in ids) + "]" for ids in e.options)
            raise UsageError(f"{w!r} is not a single token (it splits into {split}); pass --mean to average "
                             "its tokens' embeddings, or pick another word") from None
    return out


def neighbours(c: Common, word: str, top: int, mean: bool) -> int:
    """Nearest tokens to WORD in the input embedding."""
    from chatcli.engine.introspect import neighbours as nearest
    from chatcli.inspectui.embedview import render_neighbours

    need_text(word.strip())
    if top < 1:
        raise UsageError(f"--top must be >= 1; got {top}")
    model, tokenizer, _ = open_model(c, max_seq_len=8)
    E = model.model.embed_tokens.weight
    (wv,) = _words_vectors(tokenizer, E, [word], mean)
    vocab = min(tokenizer.vocab_size, E.shape[0])
    rows = nearest(E, wv.vector, top, exclude=set(wv.ids), limit=vocab)
    render_neighbours(console(c), tokenizer, wv, rows, vocab)
    return 0


def parse_terms(args: list[str]) -> list[tuple[int, str]]:
    """['king', '-', 'man', '+', 'woman'] (or one string) -> [(+1, 'king'), (-1, 'man'), (+1, 'woman')]."""
    items = [p for a in args for p in (a.split() if a.strip() not in ("+", "-") else [a.strip()])]
    terms, sign, pending = [], 1, False
    for item in items:
        if item in ("+", "-"):
            if pending:
                raise UsageError(f"two operators in a row in {' '.join(args)!r}; write WORD - WORD + WORD")
            sign, pending = (1 if item == "+" else -1), True
            continue
        if item[0] in "+-" and len(item) > 1:
            sign, item = (1 if item[0] == "+" else -1), item[1:]
        elif terms and not pending:
            raise UsageError(f"missing + or - before {item!r}; write WORD - WORD + WORD")
        terms.append((sign, item))
        sign, pending = 1, False
    if pending or len(terms) < 2:
        raise UsageError(f"an analogy needs at least two words joined by + or -, e.g. king - man + woman; got {' '.join(args)!r}")
    return terms


def analogy(c: Common, args: list[str], top: int, mean: bool) -> int:
    """king - man + woman: nearest tokens to the signed sum, the inputs excluded."""
    from chatcli.engine.introspect import analogy as combine
    from chatcli.engine.introspect import neighbours as nearest
    from chatcli.inspectui.embedview import render_analogy

    terms = parse_terms(args)
    if top < 1:
        raise UsageError(f"--top must be >= 1; got {top}")
    model, tokenizer, _ = open_model(c, max_seq_len=8)
    E = model.model.embed_tokens.weight
    vectors = _words_vectors(tokenizer, E, [w for _, w in terms], mean)
    signed = [(sign, wv) for (sign, _), wv in zip(terms, vectors)]
    vocab = min(tokenizer.vocab_size, E.shape[0])
    exclude = {i for wv in vectors for i in wv.ids}
    rows = nearest(E, combine(signed), top, exclude=exclude, limit=vocab)
    render_analogy(console(c), tokenizer, signed, rows, vocab)
    return 0
