"""Continuous batching: many generations share one model, one decode step advancing every running row together.

On a CPU a decode step is bound by reading the weights, so a step over eight rows costs little more than a step
over one. A BatchEngine owns a ModelCache of `rows` rows and one thread. Each scheduler turn it
  1. gives free rows to waiting requests (the free row whose held tokens share the longest prefix with the
     request's prompt, so a repeated system prompt is not evaluated again; else the lowest free row); what a row
     held before it is given to another prompt goes to a PrefixStore (an LRU bounded in bytes), and a prompt that
     begins as a stored prefix starts from a copy of it,
  2. runs one bounded chunk of one request's prefill (so running streams stall for a chunk, not a whole prompt),
  3. runs one decode step for every running row, each at its own position, and draws each row's token with its
     own sampler, repetition penalty and logits processors.
A request sees its row as an iterator of (token, logits), the same pairs engine.generate.generate_step yields, so
stream_generate turns it into text, stop strings and stats unchanged. Closing the iterator frees the row at the
scheduler's next turn; the row keeps its tokens for the next request's prefix reuse.

The step runs over rows 0..n-1 where n is one past the highest running row (a contiguous view of the cache);
free rows inside that range are fed a placeholder token at a position past what they hold, which costs a row of
arithmetic but no copying of caches.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from chatcli.engine.cache import PrefixStore
from chatcli.engine.errors import EngineError
from chatcli.engine.generate import LogitsProcessor, draw
from chatcli.engine.sampling import Sampler

# Tokens of one prompt per scheduler turn: what running streams wait for while a new prompt goes in. SmolLM2 bf16,
# 2 threads (bench/batch_decode.py --prefill-chunks): 32 tokens 44 ms, 64: 65 ms, 128: 110 ms, 256: 215 ms, i.e.
# 1.38, 1.02, 0.86 and 0.84 ms a token: 128 prefills almost as fast as any larger chunk and stalls a step by ~0.1 s.
PREFILL_CHUNK = 128
_DONE = object()


@dataclass
class _Job:
    ids: list[int]
    sampler: Sampler
    repeat_penalty: float
    processors: Sequence[LogitsProcessor]
    max_tokens: int
    out: queue.Queue = field(default_factory=queue.Queue)
    stopped: threading.Event = field(default_factory=threading.Event)
    row: int = -1
    done: int = 0  # prompt tokens in the row's cache so far
    cached: int = 0  # of those, how many were found there
    seen: list[int] = field(default_factory=list)  # for the repetition penalty
    drawn: int = 0
    next_token: int | None = None  # drawn, to be fed at the next decode step


class _EndedFlag:
    """The processors as stream_generate asks them, is_done() only, answered as of the token it last took: the
    scheduler may already have drawn the next one, and the live processors would answer for that."""

    def __init__(self, row: Row):
        self._row = row

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def accept(self, token: int) -> None:
        pass

    def is_done(self) -> bool:
        return self._row.ended_by_processor


class Row(Iterator[tuple[int, torch.Tensor]]):
    """One request's view of its generation: (token, logits) pairs; `cached` is how many prompt tokens its row
    already held; `processors` is what to hand stream_generate for them (see _EndedFlag). close() (or garbage
    collection) ends the generation."""

    def __init__(self, engine: BatchEngine, job: _Job, cancel: threading.Event | None):
        self._engine, self._job, self._cancel = engine, job, cancel
        self._closed = False
        self.ended_by_processor = False
        self.processors = [_EndedFlag(self)] if job.processors else []

    @property
    def cached(self) -> int:
        return self._job.cached

    def __next__(self) -> tuple[int, torch.Tensor]:
        while not self._closed and not (self._cancel is not None and self._cancel.is_set()):
            try:
                item = self._job.out.get(timeout=0.05)  # bounded, so a cancel is seen while the row waits its turn
            except queue.Empty:
                continue
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                self.close()
                raise item
            token, logits, self.ended_by_processor = item
            return token, logits
        self.close()
        raise StopIteration

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._job.stopped.set()
            self._engine._wake()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the engine's thread is gone already
            pass


class BatchEngine:
    """Up to ROWS generations at once on MODEL, each of up to MAX_LEN positions."""

    def __init__(self, model, rows: int, max_len: int, prefill_chunk: int = PREFILL_CHUNK, cache_bytes: int = 0):
        if rows < 1:
            raise EngineError(f"a batch needs at least one row, got {rows}")
        self.model, self.rows, self.max_len, self.prefill_chunk = model, rows, max_len, prefill_chunk
        self.cache = model.make_cache(rows, max_len)
        self.store = PrefixStore(cache_bytes)  # prefixes of rows given to other prompts since
        self._slots: list[_Job | None] = [None] * rows
        self._waiting: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="chatcli-batch", daemon=True)
        self._thread.start()

    # -- the requests' side --------------------------------------------------------------------------------

    def submit(self, ids: list[int], sampler: Sampler, *, repeat_penalty: float = 1.0, max_tokens: int | None = None,
               processors: Sequence[LogitsProcessor] = (), cancel: threading.Event | None = None) -> Row:
        """Queue a generation of IDS (the whole prompt; the engine finds what its rows hold of it) of at most
        MAX_TOKENS tokens (default: until the row is full or the caller closes the row)."""
        if not ids:
            raise EngineError("the prompt is empty")
        if len(ids) >= self.max_len:
            raise EngineError(f"the prompt has {len(ids)} tokens but a row holds {self.max_len}")
        job = _Job(list(ids), sampler, repeat_penalty, list(processors), max_tokens or self.max_len)
        with self._cond:
            if self._closed:
                raise EngineError("the batch engine is closed")
            self._waiting.append(job)
            self._cond.notify()
        return Row(self, job, cancel)

    @property
    def active(self) -> int:
        """Rows generating or prefilling now."""
        return sum(j is not None for j in self._slots)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # -- the scheduler's side ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not any(self._slots):
                    self._cond.wait()
                if self._closed:
                    break
                self._free_stopped()  # first, so a request arriving as another ends can take that row's prefix
                self._admit()
            try:
                with torch.inference_mode():
                    self._prefill_one()
                    self._decode()
            except BaseException as e:  # a failure of the model: every running request hears it, the rows reset
                for b, job in enumerate(self._slots):
                    if job is not None:
                        job.out.put(e if isinstance(e, Exception) else EngineError(str(e)))
                        self._release(b)
                self.cache.clear()
        for job in self._slots:
            if job is not None:
                job.out.put(_DONE)

    def _admit(self) -> None:
        """Waiting requests into free rows, in arrival order; each takes the free row sharing most of its prompt."""
        while self._waiting:
            free = [b for b, j in enumerate(self._slots) if j is None]
            if not free:
                return
            job = self._waiting.popleft()
            if job.stopped.is_set():
                continue
            ids = job.ids
            shared, b = max((self.cache.shared(r, ids), -r) for r in free)
            b = -b
            if len(self.cache.tokens[b]) > shared:  # the row is about to forget what it held past the shared part
                self.store.save(self.cache, b)
            n, key = self.store.longest(ids)
            if n > shared:
                self.store.restore(self.cache, b, key, n)
            job.row, self._slots[b] = b, job
            job.cached = job.done = self.cache.reuse(b, ids)
            job.seen = list(job.ids)

    def _free_stopped(self) -> None:
        for b, job in enumerate(self._slots):
            if job is not None and job.stopped.is_set():
                self._release(b)

    def _release(self, b: int) -> None:
        self._slots[b] = None

    def _prefill_one(self) -> None:
        """One chunk of the earliest admitted request still prefilling; its first token when the prompt is in."""
        pending = [j for j in self._slots if j is not None and j.done < len(j.ids)]
        if not pending:
            return
        job = min(pending, key=lambda j: j.row)
        b, start = job.row, job.done
        chunk = job.ids[start : start + self.prefill_chunk]
        logits = self.model(torch.tensor([chunk]), start, last_only=True, cache=self.cache.row(b))[0, -1]
        self.cache.extend(b, chunk)
        job.done += len(chunk)
        if job.done == len(job.ids):
            self._emit(job, logits)

    def _emit(self, job: _Job, logits: torch.Tensor) -> None:
        """Draw the job's next token from LOGITS and hand it over. The row ends when a processor is done (a
        complete grammar), when its context is full, or when the draw fails (that request hears why; the others
        go on)."""
        try:
            token, shaped = draw(logits, job.seen, job.sampler, job.repeat_penalty, job.processors)
            ended = any(p.is_done() for p in job.processors)
        except Exception as e:
            job.out.put(e)
            self._release(job.row)
            return
        job.seen.append(token)
        job.drawn += 1
        job.out.put((token, shaped, ended))
        # Done: a processor says so, the caller has all it asked for, or no position is left to feed the token at.
        if ended or job.drawn >= job.max_tokens or len(self.cache.tokens[job.row]) >= self.max_len:
            job.out.put(_DONE)
            self._release(job.row)
        else:
            job.next_token = token

    def _decode(self) -> None:
        """One step for every row with a drawn token to feed."""
        running = [b for b, j in enumerate(self._slots) if j is not None and j.next_token is not None and not j.stopped.is_set()]
        if not running:
            return
        n = running[-1] + 1
        tokens, pos = [], []
        for b in range(n):
            job = self._slots[b]
            if b in running:
                tokens.append(job.next_token)
                pos.append(len(self.cache.tokens[b]))
            else:  # a free or prefilling row inside the range: a placeholder past what it holds
                tokens.append(0)
                pos.append(self.cache.scratch_position(b))
        view = self.cache.rows(0, n)
        logits = self.model(torch.tensor(tokens)[:, None], torch.tensor(pos), cache=view)[:, 0]
        for b in running:
            job = self._slots[b]
            self.cache.extend(b, [job.next_token])
            job.next_token = None
            self._emit(job, logits[b])
