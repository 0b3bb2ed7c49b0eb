"""The conversation log: SQLite (WAL) in the data dir, one transaction per turn, FTS5 search.

A file that is not ours (corrupt, or another program's database) is reported as StoreError and never written to.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chatcli import settings
from chatcli.errors import StoreError, UsageError
from chatcli.types import ParamError, SamplingParams, Stats, ToolCall

APP_ID = "chatcli-conversations"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
SCHEMA = [
    "CREATE TABLE chatcli_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE conversations (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT, model TEXT, prompt TEXT,"
    " system TEXT, created REAL NOT NULL, updated REAL NOT NULL)",
    "CREATE TABLE turns (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
    " role TEXT NOT NULL, content TEXT NOT NULL, finish_reason TEXT, model TEXT, prompt TEXT,"
    " params TEXT, stats TEXT, created REAL NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX turns_by_conversation ON turns(conversation_id, id)",
    "CREATE VIRTUAL TABLE turns_fts USING fts5(content, content='turns', content_rowid='id')",
    "CREATE TRIGGER turns_ai AFTER INSERT ON turns BEGIN"
    " INSERT INTO turns_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER turns_ad AFTER DELETE ON turns BEGIN"
    " INSERT INTO turns_fts(turns_fts, rowid, content) VALUES ('delete', old.id, old.content); END",
]
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Lone surrogates (from undecodable input) become U+FFFD, so the text can be stored and tokenized."""
    return _SURROGATES.sub("\ufffd", text)


def make_title(text: str, width: int = 60) -> str:
    """A one-line title from the first user message."""
    line = " ".join(clean_text(text).split())
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


@dataclass
class Turn:
    """One message of a conversation; replies carry how they were made and how they ended."""

    role: str
    content: str
    finish_reason: str | None = None  # "stop", "length", "interrupted", "error" (an incomplete reply)
    stats: Stats | None = None
    params: SamplingParams | None = None
    model: str | None = None
    prompt: str | None = None
    id: int | None = None  # row id in the store, once saved
    created: float = field(default_factory=time.time)
    reasoning: str = ""  # a thinking model's reasoning, kept apart from the answer in content
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls
    tool_call_id: str | None = None  # a "tool" turn: the call it answers


@dataclass
class Info:
    """A stored conversation's summary line."""

    id: int
    title: str | None
    model: str | None
    prompt: str | None
    system: str | None
    created: float
    updated: float
    turn_count: int = 0


def _params_json(p: SamplingParams | None) -> str | None:
    return None if p is None else json.dumps(p.to_dict())


def _params_from_json(params: dict | None) -> SamplingParams | None:
    """The stored settings of a turn; None for a row written under other ranges (the text matters, not these)."""
    if not isinstance(params, dict):
        return None
    try:
        return SamplingParams(**params)
    except (ParamError, TypeError):
        return None


def _turn_from_row(row: sqlite3.Row) -> Turn:
    params = json.loads(row["params"]) if row["params"] else None
    stats = json.loads(row["stats"]) if row["stats"] else None
    return Turn(
        role=row["role"], content=row["content"], finish_reason=row["finish_reason"],
        stats=Stats(**stats) if stats else None,
        params=_params_from_json(params),
        model=row["model"], prompt=row["prompt"], id=row["id"], created=row["created"],
        reasoning=(row["reasoning"] or "") if "reasoning" in row.keys() else "",
        **_tools_from_json(row["tools"] if "tools" in row.keys() else None),
    )


def _add_column(db: sqlite3.Connection, name: str, decl: str) -> None:
    """Give stores made before a feature the turns column NAME (DECL), in one transaction.

    A column added in place, not a new schema version: older chatcli versions read such a store unchanged (they
    select the columns they know), so no one has to upgrade to open it."""
    def has() -> bool:
        return any(r[1] == name for r in db.execute("PRAGMA table_info(turns)"))

    if has():
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        if not has():  # another process may have added it between the look and the lock
            db.execute(f"ALTER TABLE turns ADD COLUMN {name} {decl}")
        db.execute("COMMIT")
    except sqlite3.OperationalError:  # a read-only store: read it as it is; writes fail later with a clear message
        if db.in_transaction:
            db.execute("ROLLBACK")


def _tools_json(turn: Turn) -> str | None:
    """A turn's tool calls or the call id it answers, as the tools column holds them; None for a plain turn."""
    if not turn.tool_calls and turn.tool_call_id is None:
        return None
    return json.dumps({"calls": [asdict(c) for c in turn.tool_calls], "call_id": turn.tool_call_id}, ensure_ascii=False)


def _tools_from_json(text: str | None) -> dict:
    if not text:
        return {}
    try:
        data = json.loads(text)
        calls = tuple(ToolCall(str(c["id"]), str(c["name"]), str(c["arguments"])) for c in data.get("calls") or ())
        call_id = data.get("call_id")
        return {"tool_calls": calls, "tool_call_id": None if call_id is None else str(call_id)}
    except (ValueError, TypeError, KeyError, AttributeError):  # a damaged cell loses the calls, not the turn
        return {}


class History:
    """The conversation store. Every method is one transaction; errors are StoreError naming the file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else settings.data_dir() / "history.db"
        self._lock = threading.Lock()
        self.db = self._open()

    def _fail(self, what: str, e: BaseException | None = None) -> StoreError:
        detail = f" ({e})" if e else ""
        return StoreError(f"{self.path}: {what}{detail}")

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size:
                with open(self.path, "rb") as f:
                    if f.read(16) != SQLITE_MAGIC:
                        raise self._fail("not a SQLite database (corrupt, or another program's file); chatcli will not "
                                         "overwrite it: move it aside to start a new history")
        except OSError as e:
            raise self._fail(f"cannot use the conversation store: {e.strerror}") from None
        try:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 10000")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
            if not tables:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("BEGIN IMMEDIATE")
                # Another process may have created it between our look and our lock.
                if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chatcli_meta'").fetchone():
                    for stmt in SCHEMA:
                        db.execute(stmt)
                    db.execute("INSERT INTO chatcli_meta VALUES ('app', ?), ('schema', ?)", (APP_ID, str(SCHEMA_VERSION)))
                db.execute("COMMIT")
            elif "chatcli_meta" not in tables:
                raise self._fail("is another program's database, not chatcli's; it is left untouched: point "
                                 "CHATCLI_DATA_DIR elsewhere or move the file aside")
            meta = dict(db.execute("SELECT key, value FROM chatcli_meta").fetchall())
            if meta.get("app") != APP_ID:
                raise self._fail("is not a chatcli conversation database; it is left untouched")
            if int(meta.get("schema", 0)) > SCHEMA_VERSION:
                raise self._fail(f"was written by a newer chatcli (schema {meta['schema']}); upgrade chatcli")
            db.execute("PRAGMA foreign_keys = ON")
            _add_column(db, "reasoning", "TEXT NOT NULL DEFAULT ''")  # a thinking model's reasoning
            _add_column(db, "tools", "TEXT")  # JSON: an assistant turn's tool calls, or the call a tool turn answers
            return db
        except sqlite3.DatabaseError as e:
            raise self._fail("cannot open the conversation store (corrupt or unwritable); it is left untouched", e) from None

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        self.db.close()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield self.db
                self.db.execute("COMMIT")
            except BaseException as e:
                try:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one to report
                if isinstance(e, sqlite3.Error):
                    raise self._fail("the conversation store failed", e) from None
                raise

    # -- writes ---------------------------------------------------------------------------------
    def create(self, model: str | None, prompt: str | None, system: str | None, title: str | None = None) -> int:
        """Start a conversation; returns its id."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute("INSERT INTO conversations (title, model, prompt, system, created, updated) VALUES (?,?,?,?,?,?)",
                             (title and make_title(title), model, prompt, clean_text(system or ""), now, now))
            return int(cur.lastrowid)

    def add_turn(self, conv_id: int, turn: Turn) -> int:
        """Append TURN in one transaction; the first user message titles an untitled conversation."""
        content = clean_text(turn.content)
        with self._tx() as db:
            self._need(db, conv_id)
            cur = db.execute(
                "INSERT INTO turns (conversation_id, role, content, finish_reason, model, prompt, params, stats, created,"
                " reasoning, tools) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (conv_id, turn.role, content, turn.finish_reason, turn.model, turn.prompt, _params_json(turn.params),
                 json.dumps(asdict(turn.stats)) if turn.stats else None, turn.created, clean_text(turn.reasoning),
                 _tools_json(turn)),
            )
            db.execute("UPDATE conversations SET updated = ?, model = coalesce(?, model) WHERE id = ?",
                       (time.time(), turn.model, conv_id))
            if turn.role == "user":
                db.execute("UPDATE conversations SET title = ? WHERE id = ? AND title IS NULL", (make_title(content), conv_id))
            turn.id = int(cur.lastrowid)
            return turn.id

    def delete_turns(self, conv_id: int, turn_ids: list[int]) -> None:
        """Mark turns as removed (/undo, /retry); they stay on disk but leave show, export and search."""
        with self._tx() as db:
            db.executemany("UPDATE turns SET deleted = 1 WHERE conversation_id = ? AND id = ?", [(conv_id, i) for i in turn_ids])
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conv_id))

    def update(self, conv_id: int, **fields: Any) -> None:
        """Change title, model, prompt or system of a conversation."""
        allowed = {k: (clean_text(v) if isinstance(v, str) else v) for k, v in fields.items() if k in ("title", "model", "prompt", "system")}
        if not allowed:
            return
        with self._tx() as db:
            self._need(db, conv_id)
            sets = ", ".join(f"{k} = ?" for k in allowed)
            db.execute(f"UPDATE conversations SET {sets}, updated = ? WHERE id = ?", (*allowed.values(), time.time(), conv_id))

    def remove(self, conv_id: int) -> None:
        """Delete a conversation and its turns for good."""
        with self._tx() as db:
            self._need(db, conv_id)
            db.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))

    # -- reads ----------------------------------------------------------------------------------
    @staticmethod
    def _need(db: sqlite3.Connection, conv_id: int) -> None:
        if not db.execute("SELECT 1 FROM conversations WHERE id = ?", (conv_id,)).fetchone():
            raise UsageError(f"no conversation with id {conv_id}; see `chatcli history list`")

    def list(self, limit: int | None = None) -> list[Info]:
        """Conversations, most recently updated first, with their live turn counts."""
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT c.*, (SELECT count(*) FROM turns t WHERE t.conversation_id = c.id AND NOT t.deleted) AS n "
                "FROM conversations c ORDER BY c.updated DESC, c.id DESC LIMIT ?", (limit if limit else -1,)).fetchall()
        return [Info(r["id"], r["title"], r["model"], r["prompt"], r["system"], r["created"], r["updated"], r["n"]) for r in rows]

    def last_id(self) -> int | None:
        """The most recently updated conversation, or None."""
        found = self.list(limit=1)
        return found[0].id if found else None

    def get(self, conv_id: int) -> tuple[Info, list[Turn]]:
        """A conversation and its live turns, in order."""
        with self._tx(write=False) as db:
            self._need(db, conv_id)
            r = db.execute("SELECT * FROM conversations WHERE id = ?", (conv_id,)).fetchone()
            rows = db.execute("SELECT * FROM turns WHERE conversation_id = ? AND NOT deleted ORDER BY id", (conv_id,)).fetchall()
        turns = [_turn_from_row(t) for t in rows]
        return Info(r["id"], r["title"], r["model"], r["prompt"], r["system"], r["created"], r["updated"], len(turns)), turns

    def search(self, text: str, limit: int = 20) -> list[tuple[Info, Turn, str]]:
        """Turns matching TEXT (every word, any order), with a snippet; newest first."""
        words = [w for w in clean_text(text).split() if w]
        if not words:
            raise UsageError("search for at least one word")
        query = " ".join('"' + w.replace('"', '""') + '"' for w in words)  # quoted: FTS5 syntax in TEXT is literal
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT t.*, snippet(turns_fts, 0, '[', ']', '…', 12) AS snip FROM turns_fts f JOIN turns t ON t.id = f.rowid "
                "WHERE turns_fts MATCH ? AND NOT t.deleted ORDER BY t.id DESC LIMIT ?", (query, limit)).fetchall()
        infos = {i.id: i for i in self.list()}
        return [(infos[r["conversation_id"]], _turn_from_row(r), r["snip"]) for r in rows if r["conversation_id"] in infos]


def open_store(save: bool = True) -> tuple[History | None, str | None]:
    """The default store for a chat, or (None, warning) when saving is off or impossible; the chat goes on."""
    if not save:
        return None, None
    try:
        return History(), None
    except StoreError as e:
        return None, f"conversation will not be saved: {e}"


def to_markdown(info: Info, turns: list[Turn]) -> str:
    """A conversation as Markdown."""
    from datetime import datetime

    when = datetime.fromtimestamp(info.created).strftime("%Y-%m-%d %H:%M")
    lines = [f"# {info.title or 'Untitled conversation'}", "",
             f"*{when} · model {info.model or '?'} · prompt {info.prompt or '?'}*", ""]
    if info.system:
        lines += ["**System:**", "", info.system, ""]
    for t in turns:
        who = {"user": "**User:**", "tool": f"**Tool result** ({t.tool_call_id}):"}.get(t.role, "**Assistant:**")
        mark = {"interrupted": " *(interrupted)*", "error": " *(incomplete)*", "length": " *(cut at max tokens)*"}.get(t.finish_reason or "", "")
        if t.reasoning:
            lines += [f"{who} *(thinking)*", "", *("> " + line if line else ">" for line in t.reasoning.splitlines()), ""]
        lines += [f"{who}{mark}", ""] + ([t.content, ""] if t.content or not t.tool_calls else [])
        lines += [f"*Tool call* `{c.name}` ({c.id}): `{c.arguments}`\n" for c in t.tool_calls]
    return "\n".join(lines).rstrip() + "\n"


def to_json(info: Info, turns: list[Turn]) -> str:
    """A conversation as one JSON object."""
    def turn(t: Turn) -> dict:
        d = asdict(t)
        d["params"] = json.loads(_params_json(t.params)) if t.params else None
        return d

    return json.dumps({**asdict(info), "turns": [turn(t) for t in turns]}, indent=2, ensure_ascii=False)
