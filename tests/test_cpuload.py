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
    spinner = _spinner()
    try:
        window = cpuload.Window()
        time.sleep(0.6)
        assert window.other_busy_cores() >= 0.5
    finally:
        spinner.kill()
        spinner.wait()


def _spinner() -> subprocess.Popen:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)  # let it start
    return spinner


def test_this_process_is_not_counted():
    """Spinning here takes a whole core; counted as other work it would read about one core more than sleeping does."""
    idle = cpuload.Window()
    time.sleep(0.6)
    baseline = idle.other_busy_cores()
    busy = cpuload.Window()
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        pass
    assert busy.other_busy_cores() < baseline + 0.5


def test_the_first_measure_is_kept_for_the_process(monkeypatch):
    first = cpuload.other_busy_cores()
    spinner = _spinner()
    try:
        # A fresh window over a busy core would read about 1.0: the kept figure must come back instead, unmeasured.
        monkeypatch.setattr(cpuload, "_window", cpuload.Window())
        time.sleep(0.3)
        assert cpuload.other_busy_cores() == first
    finally:
        spinner.kill()
        spinner.wait()
