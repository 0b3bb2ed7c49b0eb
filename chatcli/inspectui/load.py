"""Shared by the inspect commands: the options they all take, the local-only rule, and opening the model."""

from __future__ import annotations

from dataclasses import dataclass

from chatcli.errors import UsageError

DTYPES = ("auto", "float32", "bfloat16")


@dataclass
class Common:
    """Options every inspect command takes."""

    model: str | None = None
    backend: str | None = None
    dtype: str = "float32"
    plain: bool = False


def _check_local(s) -> None:
    """inspect needs the weights in this process: only the local backend (or a profile of type local) has them."""
    name = s.get("backend") or "local"
    kind = name if name in ("local",) else str(s.backend_profile(name).get("type", name))
    if kind != "local":
        where = s.sources.get("backend", "default")
        raise UsageError(f"inspect runs on the local backend only; the backend in effect is {name!r} (from {where}); "
                         "pass --backend local")


def model_folder(c: Common):
    """The folder of the model in effect (flag > env > config > default), after the local-only check."""
    from chatcli import settings
    from chatcli.store.resolve import resolve_model

    if c.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}; got {c.dtype!r}")
    s = settings.load_settings().apply_flags(model=c.model, backend=c.backend)
    _check_local(s)
    return resolve_model(s.get("model"))


def open_model(c: Common, max_seq_len: int = 64):
    """(model, tokenizer, label) for the model in effect, with a cache of MAX_SEQ_LEN positions (inspect needs few)."""
    from chatcli.engine.config import ModelConfig
    from chatcli.engine.loader import load_model
    from chatcli.engine.tokenizer import load_tokenizer

    path = model_folder(c)
    context = ModelConfig.from_folder(path).max_position_embeddings
    model = load_model(path, c.dtype, min(max_seq_len, context))
    tokenizer = load_tokenizer(path, vocab_limit=model.config.vocab_size)
    return model, tokenizer, path.name


def open_tokenizer(c: Common):
    """(tokenizer, label) without loading weights: `inspect tokens` needs only the tokenizer."""
    from chatcli.engine.config import ModelConfig
    from chatcli.engine.tokenizer import load_tokenizer

    path = model_folder(c)
    return load_tokenizer(path, vocab_limit=ModelConfig.from_folder(path).vocab_size), path.name


def console(c: Common):
    """The console for this command's output (plain when asked, piped or NO_COLOR)."""
    from chatcli.inspectui.common import make_console

    return make_console(c.plain)


def need_text(text: str) -> str:
    """TEXT, or a UsageError when it is empty."""
    if not text:
        raise UsageError("the text is empty; give the text to inspect, e.g. chatcli inspect tokens \"Hello world\"")
    return text


def prompt_ids(model, tokenizer, text: str, room: int = 0) -> list[int]:
    """TEXT's ids (BOS as the tokenizer config says), checked to fit the cache with ROOM positions to spare."""
    ids = tokenizer.encode(need_text(text), add_special_tokens=True)
    if len(ids) + room > model.max_seq_len:
        raise UsageError(f"the text is {len(ids)} tokens; with {room} more it needs {len(ids) + room} positions but the "
                         f"model's context is {model.config.max_position_embeddings}; shorten it")
    return ids


def context_for(c: Common, text: str, extra: int = 0) -> int:
    """Cache positions enough for TEXT plus EXTRA: a token covers at least one byte (+8 for BOS and the like)."""
    return len(text.encode("utf-8")) + extra + 8
