"""The conversation store on real SQLite: transactions per turn, kill -9, two writers, corrupt and foreign files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chatcli import settings
from chatcli.errors import StoreError, UsageError
from chatcli.history import History, Turn, clean_text, make_title, open_store, to_json, to_markdown
from chatcli.types import SamplingParams, Stats

REPO = Path(__file__).resolve().parent.parent


def test_turns_round_trip_with_everything_a_reply_carries():
    h = History()
    assert h.path == settings.data_dir() / "history.db"
    cid = h.create("tiny", "coder", "You code.")
    h.add_turn(cid, Turn("user", "How do I reverse a list in Python?\nThanks"))
    params = SamplingParams(temperature=0.2, seed=7, stop=("\n\n",))
    stats = Stats(prompt_tokens=12, completion_tokens=5, ttft_s=0.1, decode_tps=30.0)
    h.add_turn(cid, Turn("assistant", "Use `xs[::-1]`.", "stop", stats, params, "tiny", "coder"))
    h.add_turn(cid, Turn("user", "and a tuple?"))
    h.add_turn(cid, Turn("assistant", "Same sl", "interrupted", None, params, "tiny", "coder"))
    info, turns = h.get(cid)
    assert info.title == "How do I reverse a list in Python? Thanks"
    assert (info.model, info.prompt, info.system, info.turn_count) == ("tiny", "coder", "You code.", 4)
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1].params == params and turns[1].stats == stats and turns[1].finish_reason == "stop"
    assert turns[3].finish_reason == "interrupted"
    # A second connection (another process would see the same) reads what was committed.
    assert History().get(cid)[1] == turns


def test_undo_marks_turns_deleted_and_they_leave_show_and_search():
    h = History()
    cid = h.create("m", "default", "")
    ids = [h.add_turn(cid, Turn("user", "zebra question")), h.add_turn(cid, Turn("assistant", "zebra answer", "stop"))]
    h.delete_turns(cid, ids)
    assert h.get(cid)[1] == [] and h.search("zebra") == []
    assert h.db.execute("SELECT count(*) FROM turns").fetchone()[0] == 2  # the edit is recorded, not erased


def test_list_search_remove():
    h = History()
    a = h.create("m1", "default", "")
    h.add_turn(a, Turn("user", "tell me about photosynthesis"))
    b = h.create("m2", "coder", "")
    h.add_turn(b, Turn("user", 'weird "quotes" AND OR NEAR( *'))
    h.add_turn(b, Turn("assistant", "chlorophyll is green", "stop"))
    assert [i.id for i in h.list()] == [b, a] and h.last_id() == b
    hits = h.search("chlorophyll")
    assert len(hits) == 1 and hits[0][0].id == b and "[chlorophyll]" in hits[0][2]
    assert len(h.search('"quotes" AND NEAR(')) == 1  # FTS syntax in the query is taken literally
    h.remove(a)
    assert [i.id for i in h.list()] == [b]
    with pytest.raises(UsageError, match=f"no conversation with id {a}"):
        h.get(a)
    with pytest.raises(UsageError):
        h.search("   ")


def test_lone_surrogates_become_replacement_characters():
    h = History()
    cid = h.create("m", "p", "sys \udcff")
    h.add_turn(cid, Turn("user", "bad \udc80 byte"))
    info, turns = h.get(cid)
    assert turns[0].content == "bad \ufffd byte" and info.system == "sys \ufffd"
    assert clean_text("ok 😀") == "ok 😀"
    assert make_title("x" * 100).endswith("…") and len(make_title("x" * 100)) == 60


def test_exports():
    h = History()
    cid = h.create("m", "default", "Be kind.")
    h.add_turn(cid, Turn("user", "hi"))
    h.add_turn(cid, Turn("assistant", "hel", "interrupted", params=SamplingParams(stop=("x",))))
    info, turns = h.get(cid)
    md = to_markdown(info, turns)
    assert md.startswith("# hi\n") and "**System:**" in md and "*(interrupted)*" in md
    data = json.loads(to_json(info, turns))
    assert data["turns"][1]["params"]["stop"] == ["x"] and data["turns"][1]["finish_reason"] == "interrupted"


def test_garbage_file_is_reported_and_left_untouched():
    path = settings.data_dir() / "history.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a SQLite database"):
        History()
    assert path.read_bytes() == before
    store, warning = open_store()
    assert store is None and "will not be saved" in warning


def test_foreign_database_is_reported_and_left_untouched():
    path = settings.data_dir() / "history.db"
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="another program's database"):
        History()
    assert path.read_bytes() == before


def test_corrupt_pages_are_reported_and_left_untouched():
    h = History()
    cid = h.create("m", "p", "")
    for i in range(200):
        h.add_turn(cid, Turn("user", f"message {i} " * 20))
    h.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    h.close()
    path = h.path
    data = bytearray(path.read_bytes())
    data[100:4096 * 3] = b"\xa5" * (4096 * 3 - 100)  # wreck the schema page and the first table pages
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(StoreError, match=str(path)):
        h2 = History()
        h2.list()
        h2.get(cid)
    assert path.read_bytes() == before


def test_unwritable_data_dir_warns_and_chat_goes_on(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("CHATCLI_DATA_DIR", str(blocker / "data"))  # a folder cannot be made under a file, even as root
    store, warning = open_store()
    assert store is None and "will not be saved" in warning and "a-file" in warning
    assert open_store(save=False) == (None, None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_data_dir_warns(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.setenv("CHATCLI_DATA_DIR", str(ro))
    try:
        store, warning = open_store()
        assert store is None and "will not be saved" in warning
    finally:
        ro.chmod(0o755)


WRITER = textwrap.dedent("""
    import sys
    from chatcli.history import History, Turn
    h = History()
    cid = int(sys.argv[2]) if len(sys.argv) > 2 else h.create("m", "p", "")
    for i in range(int(sys.argv[1])):
        tid = h.add_turn(cid, Turn("user" if i % 2 == 0 else "assistant", f"{sys.argv[3] if len(sys.argv) > 3 else 'w'} turn {i} " * 50))
        print(cid, tid, flush=True)
""")


def _writer(n: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(n), *args], stdout=subprocess.PIPE, text=True, env=env)


def test_kill_9_during_writes_keeps_every_committed_turn():
    proc = _writer(100000)
    committed = []
    while len(committed) < 30:
        line = proc.stdout.readline()
        assert line, "writer died"
        committed.append(tuple(map(int, line.split())))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    h = History()
    assert h.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cid = committed[0][0]
    stored = {t.id for t in h.get(cid)[1]}
    assert {tid for _, tid in committed} <= stored
    h.add_turn(cid, Turn("user", "still writable after the crash"))


def test_two_processes_writing_at_once():
    h = History()
    shared = h.create("m", "p", "")
    procs = [_writer(200, str(shared), "alpha"), _writer(200, str(shared), "beta"), _writer(200)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert h.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    turns = h.get(shared)[1]
    assert len(turns) == 400 and len({t.id for t in turns}) == 400
    own = int(outs[2].split()[0])
    assert h.get(own)[0].turn_count == 200
    assert len(h.search("alpha")) == 20 and len(h.search("beta")) == 20  # search limit defaults to 20
    assert h.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
