"""cpuload: busy cores from CPU time, so the default thread count follows what the machine is really doing (issue 6).

Real processes, no mocks: a spinning child process must show as a busy core; this process's own work must not."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from chatcli.backends import cpuload

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")


def test_a_spinning_process_is_a_busy_core():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        window = cpuload.Window()
        time.sleep(0.6)
        assert window.other_busy_cores() >= 0.5
    finally:
        spinner.kill()
        spinner.wait()


def test_this_process_is_not_counted():
    cores = len(os.sched_getaffinity(0))
    window = cpuload.Window()
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        pass
    # Spinning here takes a whole core; counted as "other work" it would push the figure past cores - 0.5 whenever
    # anything else runs too. Without it, whatever else runs on the machine is at most the other cores.
    assert window.other_busy_cores() <= max(0.5, cores - 1 + 0.25)


def test_the_first_measure_is_kept_for_the_process():
    assert cpuload.other_busy_cores() == cpuload.other_busy_cores()
