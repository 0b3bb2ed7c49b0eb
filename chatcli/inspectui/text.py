"""`inspect tokens` and `inspect next`."""

from __future__ import annotations

from chatcli.errors import UsageError
from chatcli.inspectui.load import Common, console, context_for, need_text, open_model, open_tokenizer, prompt_ids


def tokens(c: Common, text: str) -> int:
    """Show the text cut into tokens."""
    from chatcli.inspectui.tokens import render_tokens

    need_text(text)
    tokenizer, _ = open_tokenizer(c)
    render_tokens(console(c), tokenizer, text)
    return 0


def next_token(c: Common, text: str, temperature: float, top: int, steps: int, seed: int | None) -> int:
    """The next-token distribution at T=1 and T, for STEPS generated tokens."""
    from chatcli.types import check

    need_text(text)
    check("temperature", temperature)  # the schema's range and message, as in chat and ask
    if top < 1:
        raise UsageError(f"--top must be >= 1; got {top}")
    if steps < 1:
        raise UsageError(f"--steps must be >= 1; got {steps}")
    from chatcli.engine.introspect import walk
    from chatcli.inspectui.nextview import render_step

    model, tokenizer, _ = open_model(c, context_for(c, text, steps))
    ids = prompt_ids(model, tokenizer, text, steps)
    out = console(c)
    generated: list[int] = []
    for n, step in enumerate(walk(model, ids, temperature, steps, seed, vocab_size=tokenizer.vocab_size)):
        context = tokenizer.decode(ids + generated)
        tail = context[-60:]
        title = f"step {n + 1}/{steps} · next token after {('…' if len(context) > 60 else '') + tail!r}"
        render_step(out, step, tokenizer, top, title=title)
        generated.append(step.token)
        if n + 1 < steps:
            out.print()
    if steps > 1:
        out.print(f"generated: {tokenizer.decode(generated)!r}")
    return 0
