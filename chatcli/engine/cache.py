"""KV caches as objects: the model makes them (`make_cache`), the caller keeps them and passes them in.

A ModelCache holds one cache per layer for B rows (sequences) and, per row, the token ids whose keys and values it
holds, so prefix reuse (the longest common prefix with a new prompt, trimmed where they diverge) is a method of the
cache rather than bookkeeping in the caller. Rows are independent: each has its own length, and `row(b)` is a view
of one row (sharing storage) that a one-sequence forward writes through, which is how a row is prefilled, reset or
trimmed alone while the others keep decoding.

Batched decode uses per-row positions rather than left padding: a row keeps the positions its own prompt gave it,
so joining a running batch needs no re-alignment (continuous batching), RoPE rows are gathered per row, and one
mask over the longest row hides each row's unwritten tail. Left padding would rotate every row by the batch's
padding and need the cache shifted whenever a longer prompt joins.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every position of B rows, [B, n_kv_heads, max_len, head_dim], written by position."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v

    @classmethod
    def empty(cls, batch: int, n_kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype) -> KVCache:
        # torch.empty leaves the pages untouched until written, so a long context costs memory only as it fills.
        # Nothing reads a position before it is written: attention reads a row only up to its last write, or masks.
        shape = (batch, n_kv_heads, max_len, head_dim)
        return cls(torch.empty(shape, dtype=dtype), torch.empty(shape, dtype=dtype))

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, KV, T, D] at start_pos (every row at the same place) and return the cache up to start_pos + T."""
        end = start_pos + k.shape[2]
        self.k[:, :, start_pos:end] = k
        self.v[:, :, start_pos:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]

    def write_rows(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write one token per row, k, v [B, KV, D], row b at position pos[b]."""
        rows = torch.arange(k.shape[0])
        self.k[rows, :, pos] = k
        self.v[rows, :, pos] = v

    def zero(self, b: int, start: int, end: int) -> None:
        self.k[b, :, start:end].zero_()
        self.v[b, :, start:end].zero_()

    def rows(self, start: int, stop: int) -> KVCache:
        """Rows start..stop-1, sharing storage."""
        return KVCache(self.k[start:stop], self.v[start:stop])

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


def ragged_mask(pos: torch.Tensor, length: int, window: int | None = None) -> torch.Tensor:
    """Which of the first LENGTH cached positions each row's query at pos[b] sees: [B, 1, 1, LENGTH] (bool),
    everything up to its own position (within WINDOW). Positions past a row's own are another row's longer tail."""
    keys = torch.arange(length)
    mask = keys <= pos[:, None]
    if window is not None:
        mask &= keys > pos[:, None] - window
    return mask[:, None, None, :]


class ModelCache:
    """One cache per layer for B rows, and per row the tokens those caches hold, position by position."""

    def __init__(self, layers: list, batch: int, max_len: int, tokens: list[list[int]] | None = None,
                 clean: torch.Tensor | None = None):
        self.layers, self.batch, self.max_len = layers, batch, max_len
        # Lists shared with row views, so what a view's forward records is the parent's record of that row.
        self.tokens = tokens if tokens is not None else [[] for _ in range(batch)]
        # Per row: positions below this hold numbers (written, or zeroed for batched reads); a view shares it.
        self.clean = clean if clean is not None else torch.zeros(batch, dtype=torch.long)

    def __getitem__(self, i: int):
        return self.layers[i]

    def row(self, b: int) -> ModelCache:
        """Row B as a cache of one row, sharing storage and bookkeeping with this one."""
        return self.rows(b, b + 1)

    def rows(self, start: int, stop: int) -> ModelCache:
        """Rows start..stop-1 as a cache of their own, sharing storage and bookkeeping with this one."""
        return type(self)._view(self, start, stop)

    @classmethod
    def _view(cls, parent: ModelCache, start: int, stop: int) -> ModelCache:
        return cls([layer.rows(start, stop) for layer in parent.layers], stop - start, parent.max_len,
                   parent.tokens[start:stop], parent.clean[start:stop])

    def scratch_position(self, b: int) -> int:
        """Where a placeholder token may be written in idle row B without harming what it holds: just past it."""
        if len(self.tokens[b]) >= self.max_len:
            self.clear(b)
        return len(self.tokens[b])

    def ready(self, pos: torch.Tensor, length: int) -> None:
        """Before a batched step that reads the first LENGTH positions of every row with row b at pos[b]: zero what
        a row has never had written between its position and LENGTH. Attention masks those slots, but the cache
        is torch.empty, and a masked NaN still poisons the output (0 * NaN); each slot is zeroed at most once."""
        for b, (p, clean) in enumerate(zip(pos.tolist(), self.clean.tolist())):
            if max(clean, p) < length:
                for layer in self.layers:
                    layer.zero(b, max(clean, p), length)
                self.clean[b] = length

    def reusable(self, b: int, n: int) -> int:
        """How many of the first N held positions of row B a new prompt may keep: all of them for full attention
        (a ring cache, holding only the last window, overrides this)."""
        return n

    def shared(self, b: int, prompt: list[int]) -> int:
        """How many leading tokens of PROMPT row B holds and may keep, leaving at least one to prefill."""
        held = self.tokens[b]
        n, limit = 0, min(len(held), len(prompt) - 1)
        while n < limit and held[n] == prompt[n]:
            n += 1
        return self.reusable(b, n)

    def reuse(self, b: int, prompt: list[int]) -> int:
        """Keep the longest prefix of row B's tokens that PROMPT shares (shared()) and return its length; the rest
        of the row is forgotten (later writes overwrite it)."""
        n = self.shared(b, prompt)
        del self.tokens[b][n:]
        return n

    def trim(self, b: int, n: int) -> None:
        """Row B keeps its first N positions (N not above what it holds)."""
        del self.tokens[b][self.reusable(b, min(n, len(self.tokens[b]))) :]

    def extend(self, b: int, tokens: list[int]) -> None:
        """Record TOKENS as written to row B after its current ones."""
        self.tokens[b].extend(tokens)

    def clear(self, b: int | None = None) -> None:
        """Forget row B (every row when None): its next prompt is prefilled whole."""
        for t in self.tokens if b is None else [self.tokens[b]]:
            t.clear()

    def nbytes(self) -> int:
        """The bytes the caches reserve (the untouched pages of a full cache are not resident until written)."""
        return sum(layer.nbytes() for layer in self.layers)

    def snapshot(self, b: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """A copy of what row B holds, per layer (k, v) [KV, n, D]; None for a cache that cannot restore one."""
        n = len(self.tokens[b])
        return [(layer.k[b, :, :n].clone(), layer.v[b, :, :n].clone()) for layer in self.layers]

    def restore(self, b: int, snapshot: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> None:
        """Write the first N positions of SNAPSHOT into row B (its tokens are the caller's to set)."""
        for layer, (k, v) in zip(self.layers, snapshot):
            layer.k[b, :, :n] = k[:, :n]
            layer.v[b, :, :n] = v[:, :n]
        self.clean[b] = max(int(self.clean[b]), n)


class PrefixStore:
    """KV prefixes that finished requests left in their rows, kept after the row is given to another prompt: an
    LRU bounded in bytes. A new request whose prompt begins as a stored one (the same system prompt, the earlier
    turns of a conversation) starts from there instead of prefilling it again."""

    MIN_TOKENS = 16  # shorter prefixes cost more to copy around than to prefill

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._entries: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}  # insertion order = LRU order

    def __len__(self) -> int:
        return len(self._entries)

    def save(self, cache: ModelCache, b: int) -> None:
        """Keep what row B holds (a copy), unless it is too short, already kept, or cannot be snapshotted."""
        tokens = tuple(cache.tokens[b])
        if self.max_bytes <= 0 or len(tokens) < self.MIN_TOKENS or tokens in self._entries:
            return
        snapshot = cache.snapshot(b)
        if snapshot is None:
            return
        size = sum(k.nbytes + v.nbytes for k, v in snapshot)
        if size > self.max_bytes:
            return
        for key in [k for k in self._entries if tokens[: len(k)] == k]:  # what this one covers
            self._drop(key)
        self._entries[tokens] = snapshot
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def longest(self, prompt: list[int]) -> tuple[int, tuple[int, ...] | None]:
        """The longest stored prefix of PROMPT, leaving at least one token to prefill: (its length, its key)."""
        best, best_key = 0, None
        for key in self._entries:
            n, limit = 0, min(len(key), len(prompt) - 1)
            while n < limit and key[n] == prompt[n]:
                n += 1
            if n > best:
                best, best_key = n, key
        return best, best_key

    def restore(self, cache: ModelCache, b: int, key: tuple[int, ...], n: int) -> None:
        """Write the first N positions of stored KEY into row B, which then holds them."""
        snapshot = self._entries.pop(key)
        self._entries[key] = snapshot  # most recently used
        cache.restore(b, snapshot, n)
        cache.tokens[b][:] = key[:n]

    def _drop(self, key: tuple[int, ...]) -> None:
        self.bytes -= sum(k.nbytes + v.nbytes for k, v in self._entries.pop(key))
