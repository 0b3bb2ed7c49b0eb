"""What the REPL's /tokens and /probs call (the REPL owns the commands; these own the looking-inside)."""

from __future__ import annotations

from chatcli.errors import UsageError
from chatcli.inspectui.nextview import TokenProb, render_reply_probs
from chatcli.inspectui.tokens import render_tokens


def _local_tokenizer(backend, command: str):
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        raise UsageError(f"{command} needs the local backend with a model loaded (this is {getattr(backend, 'name', '?')!r})")
    return tokenizer


def slash_tokens(console, backend, text: str) -> None:
    """/tokens TEXT: TEXT cut into the loaded model's tokens, with ids and counts."""
    if not text:
        raise UsageError("/tokens TEXT shows how the model's tokenizer cuts TEXT")
    render_tokens(console, _local_tokenizer(backend, "/tokens"), text)


def slash_probs(backend, arg: str) -> bool:
    """/probs on|off: ask the backend for per-token probabilities; returns the new state."""
    arg = arg.strip().lower()
    if arg not in ("on", "off"):
        raise UsageError("/probs on shows each reply's tokens coloured by probability (low ones listed); /probs off stops it")
    _local_tokenizer(backend, "/probs")
    if not hasattr(backend, "want_probs"):
        raise UsageError("/probs needs a local backend that reports token probabilities (Chunk.probs)")
    backend.want_probs = arg == "on"
    return backend.want_probs


def token_probs(records: list[dict]) -> list[TokenProb]:
    """Chunk.probs records (see engine.introspect.probs_record) as TokenProb rows."""
    return [TokenProb(r["text"], float(r["p"]), [(a["text"], float(a["p"])) for a in r.get("alternatives", [])]) for r in records]


def show_reply_probs(console, records: list[dict]) -> None:
    """After a reply: its tokens coloured by the probability they were drawn with, low ones listed with alternatives."""
    if records:
        render_reply_probs(console, token_probs(records))
