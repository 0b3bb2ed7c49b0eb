"""One engine, many clients: a fair FIFO queue in front of a single generation worker thread."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from chatcli.types import Chunk


class QueueFull(Exception):
    """More requests wait than the server accepts; the client should come back after retry_after seconds."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"{waiting} requests are already waiting")
        self.waiting, self.retry_after = waiting, retry_after


class Ticket:
    """A place in the queue; granted when it is this request's turn, released exactly once."""

    def __init__(self, future: asyncio.Future):
        self.future = future
        self.released = False


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class EngineQueue:
    """Serves up to PARALLEL requests at once (1: one at a time), the rest in arrival order; generation runs in
    worker threads off the event loop (a backend that batches, as the local one under serve_parallel does, turns
    the concurrent calls into one batch)."""

    def __init__(self, max_queue: int = 16, parallel: int = 1):
        self.max_queue, self.parallel = max_queue, parallel
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._running = 0
        self._worker = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="chatcli-generate")
        self._avg_s = 5.0  # running mean of one request's time, for Retry-After

    @property
    def depth(self) -> int:
        """Requests waiting plus those generating."""
        return len(self._waiting) + self._running

    @property
    def running(self) -> int:
        return self._running

    def reserve(self) -> Ticket:
        """Take a place in line now (in arrival order), or raise QueueFull."""
        future = asyncio.get_running_loop().create_future()
        ticket = Ticket(future)
        if self._running < self.parallel and not self._waiting:
            self._running += 1
            future.set_result(None)
        elif len(self._waiting) >= self.max_queue:
            raise QueueFull(len(self._waiting), max(1, round(self._avg_s * (len(self._waiting) + 1) / self.parallel)))
        else:
            self._waiting.append(ticket)
        return ticket

    async def wait(self, ticket: Ticket) -> None:
        """Until it is this ticket's turn; a cancelled waiter leaves the line (or passes the turn on)."""
        try:
            await ticket.future
        except asyncio.CancelledError:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                ticket.released = True
            else:
                self.release(ticket)
            raise

    def release(self, ticket: Ticket) -> None:
        """End this ticket's turn (idempotent) and wake the next waiter."""
        if ticket.released:
            return
        ticket.released = True
        while self._waiting:
            nxt = self._waiting.popleft()
            if not nxt.future.done():
                nxt.future.set_result(None)  # the turn passes on: as many running as before
                return
        self._running -= 1

    def note_duration(self, seconds: float) -> None:
        """Feed the Retry-After estimate."""
        self._avg_s = 0.8 * self._avg_s + 0.2 * seconds

    async def run(self, ticket: Ticket, generate: Callable[[], Iterator[Chunk]],
                  cancel: threading.Event) -> AsyncIterator[Chunk]:
        """Run GENERATE in the worker once it is the ticket's turn, and yield its chunks.

        If the consumer goes away (client disconnect), CANCEL is set so the backend stops within a token; the
        turn passes to the next request only when the worker has really finished, so generations never overlap.
        """
        await self.wait(ticket)
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the event loop is gone (server shutting down)
                cancel.set()

        def work() -> None:
            try:
                for chunk in generate():
                    put(chunk)
                    if cancel.is_set() and chunk.finish_reason:
                        break
            except BaseException as e:  # handed to the request, which answers with an error
                put(_Failed(e))
            finally:
                put(_END)

        try:
            done = loop.run_in_executor(self._worker, work)
        except BaseException:
            self.release(ticket)
            raise
        done.add_done_callback(lambda _: self.release(ticket))
        try:
            while True:
                item = await chunks.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            cancel.set()  # a no-op after a normal end; stops the worker when the client has gone

    def shutdown(self) -> None:
        """Stop taking work; running generation finishes in its thread."""
        self._worker.shutdown(wait=False, cancel_futures=True)
