"""Hostile but realistic command lines (issue 24), run as the real console script in a subprocess: each fails with
its exit code and one line on stderr, no traceback, and loses nothing."""

from __future__ import annotations

import pytest

from tests.plugins import run_cli


def one_line(r, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("chatcli: error: ")
    return r.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["ask", "--bogus", "x"], ["No such option: --bogus", "chatcli ask --help"]),
    (["ask", "--tempreature", "3", "x"], ["--temperature"]),  # the closest option name
    (["ask", "-t", "abc", "x"], ["'--temperature'", "number"]),
    (["history", "frob"], ["No such command 'frob'"]),
    (["ask", "--stop", "", "x"], ["stop must be a non-empty string"]),
    (["ask", "--seed", "99999999999999999999999", "x"], ["seed must be in [0, 2^64)"]),
])
def test_usage_errors_are_one_line(args, words):
    line = one_line(run_cli(*args), 2)
    for word in words:
        assert word in line
