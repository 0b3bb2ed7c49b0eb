"""/metrics in Prometheus' text format (prometheus_client): requests, tokens, queue, rows, cache hits, latencies.

One registry per app, not the library's global one, so two servers in one process (tests, a benchmark) never share
or double-register counters. The access log's record of each request is what feeds it: one place sees a request end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: from a first token in tens of milliseconds (a tiny model, a warm cache) to minutes behind a full queue.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Seconds between streamed pieces: a CPU decodes a small model in milliseconds; a stall behind a prefill is seconds.
GAP_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)


class Metrics:
    """The server's counters, gauges and histograms; WAITING() and CACHE_BYTES() are read when scraped."""

    def __init__(self, waiting: Callable[[], float] | None = None, cache_bytes: Callable[[], float] | None = None):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("chatcli_requests", "Completion requests answered, by route and HTTP status",
                                ("route", "status"), registry=r)
        self.prompt_tokens = Counter("chatcli_prompt_tokens", "Prompt tokens of answered requests", registry=r)
        self.cached_tokens = Counter("chatcli_prompt_cached_tokens",
                                     "Prompt tokens served from the prompt cache instead of a prefill", registry=r)
        self.completion_tokens = Counter("chatcli_completion_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram("chatcli_time_to_first_token_seconds",
                              "From the request's arrival to its first token (queueing included)",
                              buckets=TTFT_BUCKETS, registry=r)
        self.gap = Histogram("chatcli_inter_token_seconds", "Time between consecutive pieces of one reply",
                             buckets=GAP_BUCKETS, registry=r)
        self.queue_depth = Gauge("chatcli_queue_depth", "Requests waiting for a row", registry=r)
        self.active = Gauge("chatcli_active_rows", "Generations running now", registry=r)
        # Memory that grows by design up to --cache-ram: a load test tells it from a leak by this.
        self.cache_bytes = Gauge("chatcli_prompt_cache_bytes", "Bytes of KV prefixes kept for later requests", registry=r)
        self._active = 0
        self._lock = threading.Lock()
        if waiting is not None:
            self.queue_depth.set_function(waiting)
        if cache_bytes is not None:
            self.cache_bytes.set_function(cache_bytes)

    def started(self) -> None:
        """A generation took a row (called from the generating thread)."""
        with self._lock:
            self._active += 1
            self.active.set(self._active)

    def stopped(self) -> None:
        """A generation left its row: finished, failed or cancelled."""
        with self._lock:
            self._active -= 1
            self.active.set(self._active)

    @property
    def running(self) -> int:
        return self._active

    def rows(self, chunks: Iterator) -> Iterator:
        """CHUNKS, counted as one active row from their first step until they end or are closed."""
        self.started()
        try:
            yield from chunks
        finally:
            self.stopped()

    def request_done(self, route: str, status: int, ttft_s: float | None, stats) -> None:
        """One request's end, as the access log reports it: STATS (a chatcli.types.Stats) may be None."""
        self.requests.labels(route, str(status)).inc()
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        if stats is not None:
            self.prompt_tokens.inc(stats.prompt_tokens)
            self.cached_tokens.inc(stats.cached_tokens)
            self.completion_tokens.inc(stats.completion_tokens)

    def text(self) -> tuple[bytes, str]:
        """The exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
