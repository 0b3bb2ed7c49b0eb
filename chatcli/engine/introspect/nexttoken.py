"""The next-token distribution, how temperature reshapes it, and where a sampled token falls in it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from chatcli.engine.generate import generate_step
from chatcli.engine.sampling import make_sampler


def distribution(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) in float32; T = 0 is greedy, all mass on the argmax."""
    logits = logits.float()
    if temperature == 0:
        out = torch.zeros_like(logits)
        out[logits.argmax()] = 1.0
        return out
    return torch.softmax(logits / temperature, dim=-1)


def entropy_bits(probs: torch.Tensor) -> float:
    """Shannon entropy in bits (0 log 0 counts as 0)."""
    p = probs[probs > 0].double()
    return max(0.0, float(-(p * p.log2()).sum()))  # max: a one-hot sum is -0.0


def rank_of(probs: torch.Tensor, token: int) -> int:
    """1-based rank of TOKEN in PROBS (1 = likeliest); ties rank by id, as a stable sort does."""
    return int((probs > probs[token]).sum()) + 1


@dataclass
class Step:
    """One position: the raw logits, the distributions at T=1 and at the chosen T, and the token drawn at T."""

    position: int
    logits: torch.Tensor  # [V] float32
    probs_t1: torch.Tensor
    probs_t: torch.Tensor
    temperature: float
    token: int
    entropy_t1: float
    entropy_t: float

    def rank(self, probs: torch.Tensor | None = None) -> int:
        """Rank of the sampled token in PROBS (default: the distribution at T)."""
        return rank_of(self.probs_t if probs is None else probs, self.token)

    def top(self, k: int, probs: torch.Tensor | None = None) -> list[tuple[int, float]]:
        """The k likeliest (id, probability) pairs of PROBS (default: T=1)."""
        probs = self.probs_t1 if probs is None else probs
        values, ids = torch.topk(probs, min(k, probs.shape[-1]))
        return [(int(i), float(v)) for i, v in zip(ids, values)]


def walk(model, prompt_ids: list[int], temperature: float, steps: int = 1, seed: int | None = None,
         vocab_size: int | None = None) -> Iterator[Step]:
    """Yield STEPS positions of plain sampling at TEMPERATURE (no top-p/top-k filters), with both distributions.

    vocab_size: the tokenizer's size; embedding rows past it (padding) can never be real text, so they are dropped.
    """
    base = make_sampler(temperature=temperature, seed=seed)
    limit = vocab_size or None

    def sampler(logits: torch.Tensor) -> int:
        return base(logits[:limit])  # the same draw the chat would make, over real tokens only

    pos = len(prompt_ids)
    for n, (token, logits) in enumerate(generate_step(model, prompt_ids, sampler=sampler)):
        logits = logits[:limit].float()
        p1, pt = distribution(logits, 1.0), distribution(logits, temperature)
        yield Step(pos + n, logits, p1, pt, temperature, token, entropy_bits(p1), entropy_bits(pt))
        if n + 1 >= steps:
            return  # before generate_step runs one more forward pass


def chosen_probability(probs: torch.Tensor, token: int, alternatives: int = 3) -> tuple[float, list[tuple[int, float]]]:
    """The probability TOKEN had in PROBS and the likeliest other tokens (for a per-token view of a reply)."""
    values, ids = torch.topk(probs, min(alternatives + 1, probs.shape[-1]))
    others = [(int(i), float(v)) for i, v in zip(ids, values) if int(i) != token][:alternatives]
    return float(probs[token]), others


def probs_record(tokenizer, probs: torch.Tensor, token: int, alternatives: int = 3) -> dict:
    """A plain-data record of one generated token for a per-token view (/probs): id, text, p and the likeliest others.

    PROBS is the distribution the token was drawn from (Sampler.probabilities(logits), or softmax(logits) for greedy).
    """
    p, others = chosen_probability(probs, token, alternatives)
    return {
        "id": int(token), "text": tokenizer.decode([int(token)]), "p": p,
        "alternatives": [{"id": i, "text": tokenizer.decode([i]), "p": q} for i, q in others],
    }
