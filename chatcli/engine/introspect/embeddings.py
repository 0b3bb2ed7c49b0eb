"""The input embedding matrix as a space: nearest tokens by cosine similarity, and vector arithmetic on words."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class WordVector:
    """A word's vector: the token(s) it became, and whether they were averaged."""

    word: str
    ids: list[int]
    vector: torch.Tensor  # [hidden] float32
    averaged: bool


class MultiTokenWord(ValueError):
    """The word is several tokens and averaging was not asked for; .options lists each spelling's tokens."""

    def __init__(self, word: str, options: list[list[int]]):
        super().__init__(word)
        self.word, self.options = word, options


def spellings(word: str) -> list[str]:
    """The word as typed and, for BPE vocabularies where words inside a sentence carry their space, ' word'."""
    return [word] if word.startswith(" ") else [" " + word, word]


def word_vector(tokenizer, embedding: torch.Tensor, word: str, mean: bool = False) -> WordVector:
    """The embedding row of WORD's single token (space-prefixed spelling first), or the mean of its tokens with MEAN.

    Raises MultiTokenWord when no spelling is one token and MEAN is off.
    """
    options = [tokenizer.encode(s) for s in spellings(word)]
    options = [ids for ids in options if ids]
    for ids in options:
        if len(ids) == 1:
            return WordVector(word, ids, embedding[ids[0]].float(), False)
    if not options:
        raise MultiTokenWord(word, [])
    if not mean:
        raise MultiTokenWord(word, options)
    ids = min(options, key=len)  # the spelling with fewest pieces
    return WordVector(word, ids, embedding[ids].float().mean(0), True)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def neighbours(embedding: torch.Tensor, vector: torch.Tensor, top: int = 10, exclude: set[int] = frozenset(),
               limit: int | None = None) -> list[tuple[int, float]]:
    """The TOP rows of EMBEDDING nearest to VECTOR by cosine similarity, skipping EXCLUDE and rows >= LIMIT."""
    E = embedding[:limit].float() if limit else embedding.float()
    sims = _unit(E) @ _unit(vector.float())  # [V]
    if exclude:
        sims[torch.tensor(sorted(i for i in exclude if i < len(sims)), dtype=torch.long)] = float("-inf")
    values, ids = torch.topk(sims, min(top, len(sims) - len(exclude)))
    return [(int(i), float(v)) for i, v in zip(ids, values)]


def analogy(terms: list[tuple[int, WordVector]]) -> torch.Tensor:
    """Σ sign·unit(vector): king − man + woman with every word scaled to unit length first (3CosAdd)."""
    total = torch.zeros_like(terms[0][1].vector)
    for sign, wv in terms:
        total += sign * _unit(wv.vector)
    return total
