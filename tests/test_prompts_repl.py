"""In the real REPL (a pseudo-terminal): /prompt reload picks up an edit made on disk, and a conversation longer
than a 64-token context keeps going with the dropped-exchanges notice."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pexpect

from chatcli import settings
from chatcli.history import History

CHATCLI = str(Path(sys.executable).with_name("chatcli"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def test_prompt_reload_and_small_context_in_the_repl(tmp_path, tiny_tokenizer_dir):
    from tests.tinymodels import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny64", "llama", tokenizer_dir=tiny_tokenizer_dir, max_position_embeddings=64)
    prompt = settings.prompts_dir() / "mine.md"
    prompt.parent.mkdir(parents=True)
    prompt.write_text("---\ntemperature: 0.3\n---\nVersion one.\n")
    log = tmp_path / "pty.log"
    child = pexpect.spawn(CHATCLI, ["chat", "--model", str(model), "--prompt", "mine", "--max-tokens", "6"],
                          env=dict(os.environ), encoding="utf-8", timeout=90, dimensions=(40, 120))
    child.logfile_read = log.open("w")
    try:
        child.expect(">>>")
        child.sendline("hello")
        child.expect("tokens")  # the stats line ends the reply
        child.expect(">>>")
        prompt.write_text("---\ntemperature: 0.9\n---\nVersion two.\n")  # edited in another window
        child.sendline("/prompt reload")
        child.expect("reloaded prompt mine")
        child.expect(">>>")
        child.sendline("/system")
        child.expect("Version two.")
        child.expect(">>>")
        for i in range(4):
            child.sendline(f"question number {i} with a few words")
            child.expect("tokens")
            child.expect(">>>")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
        child.logfile_read.close()
    screen = ANSI.sub("", log.read_text())
    assert re.search(r"dropped \d+ earlier exchanges? to fit 64-token context", screen), screen[-2000:]
    info, turns = History().get(History().last_id())
    assert info.system == "Version two." and len(turns) == 10
    replies = [t for t in turns if t.role == "assistant"]
    assert replies[0].params.temperature == 0.3
    assert all(r.params.temperature == 0.9 for r in replies[1:])  # every turn after the reload used the new file
