"""The context budget: which earlier exchanges still fit in the model's context, and how many tokens are left."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatcli.errors import UsageError
from chatcli.types import Message

Counter = Callable[[list[Message]], int]


@dataclass(frozen=True)
class Fit:
    """What to send: the messages, their token count, and how many leading exchanges were left out."""

    messages: list[Message]
    used: int
    dropped: int
    context: int

    @property
    def left(self) -> int:
        """Tokens the reply may use."""
        return self.context - self.used


def _flat(system: list[Message], exchanges: Sequence[list[Message]], tail: list[Message]) -> list[Message]:
    return [*system, *(m for ex in exchanges for m in ex), *tail]


def fit(
    count: Counter,
    system: list[Message],
    exchanges: Sequence[list[Message]],
    tail: list[Message],
    context: int,
    *,
    reserve: int = 1,
    policy: str = "drop-oldest",
) -> Fit:
    """Keep the system prompt and TAIL (the new message); drop the fewest oldest EXCHANGES so that RESERVE tokens
    stay free for the reply. If the whole history fits only without the reserve, send it and let the reply be short.

    Raises UsageError naming both sizes when the system prompt and TAIL alone leave no room for a single token, and,
    under policy "error", when anything would have to be dropped.
    """
    reserve = max(1, min(reserve, context // 4 or 1))
    full = _flat(system, exchanges, tail)
    used = count(full)
    if used + reserve <= context:
        return Fit(full, used, 0, context)
    if policy == "error":
        if used < context:  # it fits; the reply is capped at what is left
            return Fit(full, used, 0, context)
        if exchanges:
            raise UsageError(f"the conversation needs {used} tokens but the context holds {context}; "
                             "/undo or /reset, or use --context-policy drop-oldest")
    # Tokens only shrink as exchanges are dropped, so search for the fewest drops that leave the reserve free.
    lo, hi = 1, len(exchanges) if policy != "error" else 0
    best: tuple[int, int] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        n = count(_flat(system, exchanges[mid:], tail))
        if n + reserve <= context:
            best, hi = (mid, n), mid - 1
        else:
            lo = mid + 1
    if best is not None:
        k, n = best
        return Fit(_flat(system, exchanges[k:], tail), n, k, context)
    bare = _flat(system, [], tail)
    n = count(bare) if exchanges else used
    if n < context:  # no room for the reserve, but a short reply still fits
        return Fit(bare, n, len(exchanges), context)
    sys_tokens = count(system) if system else 0
    raise UsageError(
        f"the system prompt ({sys_tokens} tokens) and your message ({n - sys_tokens} tokens) do not fit the "
        f"{context}-token context; shorten the message, choose a shorter prompt (/system, --prompt concise), "
        "or use a model with a longer context"
    )


def drop_notice(dropped: int, context: int) -> str:
    """The one dim line the REPL prints when earlier exchanges leave the context."""
    return f"dropped {dropped} earlier exchange{'s' if dropped != 1 else ''} to fit {context}-token context"
