"""The chat REPL driven in a real pseudo-terminal (pexpect) and through piped stdin, with a tiny random model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from tests.tinymodels import make_tiny_model

CHATCLI = str(Path(sys.executable).with_name("chatcli"))
ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Z0-9]|\x1b[=>78]|\r")


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_tokenizer_dir) -> str:
    """A tiny random Llama with a 4096-token context, so a long reply runs for seconds (time to press Ctrl-C)."""
    path = tmp_path_factory.mktemp("repl") / "tiny-repl"
    return str(make_tiny_model(path, "llama", tokenizer_dir=tiny_tokenizer_dir, max_position_embeddings=4096))


class Term:
    """A chatcli chat in a 100x30 pty. It answers prompt-toolkit's cursor-position requests as a terminal would."""

    def __init__(self, *args: str, env: dict | None = None, prompt: str = r"\d+/4096 tokens") -> None:
        # A fresh prompt is the one moment the bottom toolbar is drawn (keystrokes only redraw what changed);
        # prompt-toolkit also redraws ">>> " when a line is accepted, so that is no marker.
        self.prompt_pattern = prompt
        env = {**os.environ, "TERM": "xterm-256color", **(env or {})}
        env.pop("NO_COLOR", None) if "NO_COLOR" not in (env or {}) else None
        self.child = pexpect.spawn(CHATCLI, ["chat", *args], env=env, dimensions=(30, 100), encoding="utf-8",
                                   codec_errors="replace", timeout=60)
        self.log: list[str] = []

    def expect(self, pattern: str, timeout: float = 60) -> str:
        """Wait for PATTERN (a regex); return the text up to and including it, ANSI removed."""
        seen = []
        while True:
            try:
                i = self.child.expect([r"\x1b\[6n", pattern], timeout=timeout)
            except (pexpect.EOF, pexpect.TIMEOUT) as e:  # show what the terminal got, not pexpect's internals
                got = ANSI.sub("", "".join(seen) + str(self.child.before))[-3000:]
                raise AssertionError(f"{type(e).__name__} waiting for {pattern!r}; the screen got:\n{got}") from None
            seen.append(self.child.before)
            if i == 0:
                self.child.send("\x1b[30;1R")  # the cursor-position report a real terminal sends
                continue
            self.log.append("".join(seen) + self.child.after)
            return ANSI.sub("", self.log[-1])

    def prompt(self, timeout: float = 60) -> str:
        """Wait for a fresh prompt; return what was printed since the last wait."""
        return self.expect(self.prompt_pattern, timeout)

    def line(self, text: str) -> None:
        self.child.send(text + "\r")

    def close(self) -> int:
        self.child.sendcontrol("d")
        self.child.expect(pexpect.EOF, timeout=30)
        self.log.append(self.child.before)
        self.child.close()
        return self.child.exitstatus


def test_scripted_session(model, _isolated_home):
    """Two exchanges; /set temperature 0 then /retry twice gives the same reply; unknown command; Ctrl-D saves."""
    t = Term("--model", model, "--max-tokens", "8", "--system", "Be brief.")
    first = t.prompt()
    assert "chatcli · tiny-repl on local" in first  # the banner
    assert re.search(r"tiny-repl · local · prompt default · temp 0.7 · top_p 0.95 · seed - · \d+/4096 tokens", first)
    for message in ("hello there", "and a second question"):
        t.line(message)
        assert re.search(r"\d+ tokens · TTFT [\d.]+ s · [\d.]+ tok/s", t.expect(r"tok/s[^\n]*\n"))
        t.prompt()
    t.line("/set temperature 0")
    t.expect("temperature = 0")
    t.prompt()
    transcripts = []
    for _ in range(2):
        t.line("/retry")
        t.expect(r"tok/s")
        t.prompt()
        t.line("/transcript")
        shown = t.prompt()
        transcripts.append(shown[shown.index("system:"):])  # from the transcript on (line redraws before it vary)
    assert transcripts[0] == transcripts[1]
    assert transcripts[0].count("user:") == 2 and transcripts[0].count("assistant") == 2
    t.line("/frobnicate")
    assert "error: unknown command /frobnicate" in t.prompt()
    t.line("/set temperature hot")
    assert "temperature must be a number, got 'hot'" in t.prompt()
    t.line("/undo")
    assert "dropped the last exchange (and a second question)" in t.prompt()
    t.line("/stats")
    assert "replies" in t.prompt()
    assert t.close() == 0
    assert "saved as conversation 1" in t.log[-1]
    from chatcli.history import History

    info, turns = History(_isolated_home / "data" / "history.db").get(1)
    assert [x.role for x in turns] == ["user", "assistant"]  # the undone exchange is gone from the store
    assert "hello there" in (_isolated_home / "data" / "input_history").read_text()


def test_ctrl_c_stops_a_long_reply_and_keeps_it(model):
    # Greedy, so the run is the same every time: sampling could pick the end-of-turn token before Ctrl-C is sent.
    t = Term("--model", model, "--max-tokens", "3500", "--system", "Be brief.", "-t", "0")
    t.prompt()
    t.line("tell me a very long story")
    t.expect(r"\S")  # the reply (or its spinner) has started
    time.sleep(1.0)
    start = time.monotonic()
    t.child.sendintr()
    t.expect(r"interrupted", timeout=5)
    t.prompt(timeout=5)
    assert time.monotonic() - start < 1.0
    t.line("/transcript")
    shown = t.prompt()
    assert "assistant (interrupted):" in shown
    t.line("/undo")
    t.prompt()
    t.line("/transcript")
    assert "(no messages yet)" in t.prompt()
    assert t.close() == 0


def test_keys_multiline_paste_clear_and_tab(model):
    """Ctrl-C clears the line; Alt-Enter and a bracketed paste keep newlines in one message; Tab completes."""
    t = Term("--model", model, "--max-tokens", "2", "--system", "Be brief.", "--no-save")
    t.prompt()
    t.child.send("this is discarded")
    t.child.sendintr()
    t.child.send("/transc\t")
    time.sleep(1.0)  # let the completion land (the screen only gets the changed characters, so no text to wait for)
    t.child.send("\r")
    assert "(no messages yet)" in t.prompt()
    t.child.send("first line\x1b\rsecond line\r")  # Esc Enter, as terminals send Alt-Enter
    t.expect("tok/s")
    t.prompt()
    t.child.send("\x1b[200~pasted one\npasted two\x1b[201~")
    t.child.send("\r")
    t.expect("tok/s")
    t.prompt()
    t.line("/transcript")
    shown = t.prompt()
    assert shown.count("user:") == 2 and "this is discarded" not in shown
    assert re.search(r"first line\s+second line", shown) and re.search(r"pasted one\s+pasted two", shown)
    t.child.sendcontrol("r")  # reverse search through the input history
    t.child.send("pasted")
    t.expect(r"reverse-i-search")
    t.child.sendcontrol("g")  # leave the search
    t.child.sendintr()  # and clear the line
    assert not any("\x1b]52;" in chunk for chunk in t.log)  # the clipboard is touched only on request
    t.line("/copy")
    t.expect(r"\x1b\]52;c;[A-Za-z0-9+/=]*\x07")
    t.prompt()
    assert t.close() == 0


def test_no_color_terminal_is_plain_and_prompt_reload(model, _isolated_home):
    """NO_COLOR: the same loop with no ANSI at all. A prompt file edited on disk applies after /prompt reload."""
    prompts = _isolated_home / "prompts"
    prompts.mkdir()
    (prompts / "pirate.md").write_text("---\ndescription: arr\ntemperature: 0.5\n---\nYou are a pirate.\n")
    t = Term("--model", model, "--max-tokens", "3", "--prompt", "pirate", "--no-save", env={"NO_COLOR": "1"},
             prompt=">>> ")
    t.prompt()
    t.line("hi")
    t.expect("tok/s")
    t.prompt()
    t.line("/system")
    assert "You are a pirate." in t.prompt()
    (prompts / "pirate.md").write_text("---\ndescription: arr\ntemperature: 0.1\n---\nYou are a parrot.\n")
    t.line("/prompt reload")
    t.prompt()
    t.line("/system")
    assert "You are a parrot." in t.prompt()
    t.line("/set")
    assert re.search(r"temperature\s+0.1\s+prompt pirate", t.prompt())
    assert t.close() == 0
    assert not any("\x1b" in chunk for chunk in t.log)


def test_piped_lines_plain_mode(model):
    """Scripted stdin: plain text only, replies deterministic at temperature 0, errors on stderr, exit 0."""
    script = b"/set temperature 0\nhello\n/retry\n/xyzzy\n/set top_p 2\n"
    r = subprocess.run([CHATCLI, "chat", "--model", model, "--max-tokens", "6", "--system", "Be brief.", "--no-save"],
                       input=script, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out, err = r.stdout.decode(), r.stderr.decode()
    assert "\x1b" not in out + err
    lines = out.splitlines()
    assert lines[0] == "temperature = 0"
    stats = [i for i, line in enumerate(lines) if "tok/s" in line]
    assert len(stats) == 2
    first, second = lines[1:stats[0]], lines[stats[0] + 1:stats[1]]
    assert first == second and first
    assert err.splitlines() == ["error: unknown command /xyzzy (/help lists them; start with // to send a message "
                                "that begins with /)", "error: top_p must be in (0, 1]; got 2.0"]
