"""Where the tokenizer cuts a text: one span of the original characters per token."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenSpan:
    """One token: its id, the vocabulary entry as stored, and the characters of the text it stands for."""

    id: int
    piece: str
    text: str  # a character split across tokens belongs to the token that completes it (so this may be "")


def token_spans(tokenizer, text: str, ids: list[int] | None = None) -> list[TokenSpan]:
    """Spans of TEXT's tokens (or of IDS); their .text joins to tokenizer.decode(ids).

    Decoding growing prefixes (not single tokens) keeps sentencepiece's space rule and byte-level merges right;
    a prefix that ends in U+FFFD ends in an incomplete character, held back until a later token completes it.
    """
    ids = tokenizer.encode(text) if ids is None else list(ids)
    spans, shown = [], ""
    for n, i in enumerate(ids, 1):
        prefix = tokenizer.decode(ids[:n])
        whole = prefix.rstrip("\ufffd")  # the characters already complete; the rest waits for later bytes
        new = ""
        if whole.startswith(shown):
            new, shown = whole[len(shown):], whole
        spans.append(TokenSpan(int(i), tokenizer.id_to_piece(int(i)), new))
    full = tokenizer.decode(ids) if ids else ""
    if full != shown and spans and full.startswith(shown):  # a trailing incomplete character: give it to the last token
        last = spans[-1]
        spans[-1] = TokenSpan(last.id, last.piece, last.text + full[len(shown):])
    return spans
