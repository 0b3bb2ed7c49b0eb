"""Prompt-cache bookkeeping: which tokens the KV cache holds, and how much of a new prompt it can reuse."""

from __future__ import annotations


class PromptCache:
    """Tracks the token ids whose keys and values sit in the model's cache, position by position."""

    def __init__(self) -> None:
        self.tokens: list[int] = []

    def reuse(self, prompt: list[int]) -> int:
        """Length of the longest common prefix with PROMPT, keeping at least one token to prefill.

        The cache is written by position, so "trimming" is only forgetting: later writes overwrite the stale tail.
        """
        n = 0
        limit = min(len(self.tokens), len(prompt) - 1)
        while n < limit and self.tokens[n] == prompt[n]:
            n += 1
        self.tokens = self.tokens[:n]
        return n

    def extend(self, tokens: list[int]) -> None:
        """Record tokens just written to the cache after the current ones."""
        self.tokens.extend(tokens)

    def clear(self) -> None:
        """Forget everything (the next prompt is prefilled whole)."""
        self.tokens = []
