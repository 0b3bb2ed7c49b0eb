"""How many cores other work keeps busy right now, from /proc/stat, to size the engine's thread pool.

The 1-minute load average is the obvious source, but it lies on shared and virtual machines: on the 2-core machine
chatcli is tuned on it reads about 1.0 while both cores sit idle (a runnable task that no CPU time ever shows), which
made the default one thread, and decoding 30-40 % slower than with two. CPU time does not lie: what the machine spent,
less what this process spent, over the last second or so. That second is free: the window runs from this module's
import to the model load, and importing torch alone takes about that long.
"""

from __future__ import annotations

import os
import time

MIN_WINDOW_S = 0.2  # a shorter window (torch already imported: the server, tests) is topped up by sleeping


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None where /proc/stat is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _own_cpu() -> float:
    """CPU seconds of this process and of its children that have been waited for (the bench's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Window:
    """A measuring window, opened when made."""

    def __init__(self) -> None:
        self.t0, self.cpu0, self.ticks0 = time.monotonic(), _own_cpu(), _cpu_ticks()

    def other_busy_cores(self) -> float | None:
        """Cores busy with work other than this process since the window opened (None if unknown)."""
        if self.ticks0 is None:
            return None
        wait = MIN_WINDOW_S - (time.monotonic() - self.t0)
        if wait > 0:
            time.sleep(wait)
        ticks1 = _cpu_ticks()
        if ticks1 is None:
            return None
        busy, total = ticks1[0] - self.ticks0[0], ticks1[1] - self.ticks0[1]
        wall, own = time.monotonic() - self.t0, _own_cpu() - self.cpu0
        if total <= 0 or wall <= 0:
            return None
        cores = total / (wall * os.sysconf("SC_CLK_TCK"))  # the CPUs the ticks were counted over
        return max(0.0, busy / total * cores - own / wall)


_window = Window()
_measured: list[float | None] = []


def other_busy_cores() -> float | None:
    """Cores other work kept busy between this module's import and the first call (at least MIN_WINDOW_S); later
    calls in the same process (a server, the tests) return the same figure rather than sleep again."""
    if not _measured:
        _measured.append(_window.other_busy_cores())
    return _measured[0]
