"""kill -9 of a real `chatcli chat` in the middle of a reply: the store opens and holds every earlier turn."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pexpect

from chatcli.history import History

CHATCLI = str(Path(sys.executable).with_name("chatcli"))


def _turns() -> int:
    try:
        store = History()
        try:
            last = store.last_id()
            return store.get(last)[0].turn_count if last else 0
        finally:
            store.close()
    except Exception:  # not created yet
        return 0


def test_kill_9_during_a_reply(tiny_llama_dir, tmp_path):
    child = pexpect.spawn(CHATCLI, ["chat", "--model", str(tiny_llama_dir), "--prompt", "concise", "-t", "0",
                                    "--max-tokens", "4"], env=dict(os.environ), encoding="utf-8", timeout=90,
                          dimensions=(40, 120))
    child.logfile_read = (tmp_path / "pty.log").open("w")
    try:
        child.expect(">>>")
        for text in ("first question", "second question"):
            child.sendline(text)
            child.expect("tokens")
            child.expect(">>>")
        child.sendline("/set max_tokens 100000")
        child.expect(">>>")
        child.sendline("third question, with a long answer")
        # The user message is committed just before the reply starts streaming: kill as soon as it is there.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _turns() < 5:
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
        child.logfile_read.close()
    store = History()
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    info, turns = store.get(store.last_id())
    assert [(t.role, t.content) for t in turns[:3:2]] == [("user", "first question"), ("user", "second question")]
    assert [t.role for t in turns[:4]] == ["user", "assistant", "user", "assistant"]
    assert all(t.finish_reason == "length" for t in turns[1:4:2])
    assert turns[4].content == "third question, with a long answer"
    assert len(turns) == 5  # the reply in flight was never committed; nothing half-written
    store.add_turn(info.id, turns[0])  # and the store is writable again
