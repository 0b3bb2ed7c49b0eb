"""`inspect attention` and `inspect model`."""

from __future__ import annotations

from chatcli.errors import UsageError
from chatcli.inspectui.load import Common, console, context_for, open_model, prompt_ids


def pick_layer(layer: int, n_layers: int) -> int:
    """LAYER in [-n_layers, n_layers) (negative counts from the end) as an index, or a UsageError naming the range."""
    if not -n_layers <= layer < n_layers:
        raise UsageError(f"--layer must be in 0..{n_layers - 1} (or -{n_layers}..-1 from the end); got {layer}")
    return layer % n_layers


def pick_heads(head: int | None, heads: str | None, n_heads: int) -> list[int]:
    """--head H (one head) or --heads all / a comma list; default all."""
    if head is not None and heads is not None:
        raise UsageError("give --head H or --heads all, not both")
    if head is not None:
        if not 0 <= head < n_heads:
            raise UsageError(f"--head must be in 0..{n_heads - 1}; got {head}")
        return [head]
    if heads in (None, "all"):
        return list(range(n_heads))
    try:
        chosen = [int(h) for h in heads.split(",")]
    except ValueError:
        raise UsageError(f"--heads takes 'all' or a comma-separated list like 0,3,5; got {heads!r}") from None
    bad = [h for h in chosen if not 0 <= h < n_heads]
    if bad:
        raise UsageError(f"--heads: head {bad[0]} is outside 0..{n_heads - 1}")
    return chosen


def attention(c: Common, text: str, layer: int, head: int | None, heads: str | None, png: str | None) -> int:
    """Heatmaps of one layer's attention pattern in the terminal, or a PNG grid with --png."""
    from chatcli.engine.introspect import attention_probs, token_spans
    from chatcli.inspectui.heatmap import render_heatmap

    model, tokenizer, label = open_model(c, context_for(c, text))
    L = pick_layer(layer, model.config.num_hidden_layers)
    chosen = pick_heads(head, heads, model.config.num_attention_heads)
    ids = prompt_ids(model, tokenizer, text)
    try:
        probs = attention_probs(model, ids, [L])[L]  # [H, T, T]
    except NotImplementedError as e:
        raise UsageError(f"{e}; inspect attention supports llama, mistral, qwen2 and gemma3") from None
    labels = [s.text or tokenizer.id_to_piece(s.id) for s in token_spans(tokenizer, "", ids)]
    out = console(c)
    if png:
        from chatcli.inspectui.png import save_attention_png

        title = f"{label} · layer {L} · {len(ids)} tokens"
        try:
            path = save_attention_png(png, probs, chosen, labels, title)
        except OSError as e:
            from chatcli.errors import ChatcliError

            raise ChatcliError(f"cannot write {png}: {e.strerror or e}; pick a writable path") from None
        # a path a script may read: never wrapped at the terminal's width
        out.print(f"wrote {path} ({len(chosen)} head{'s' if len(chosen) > 1 else ''} of layer {L}, {len(ids)} tokens)",
                  soft_wrap=True)
        return 0
    for n, h in enumerate(chosen):
        if n:
            out.print()
        render_heatmap(out, probs[h], labels, f"{label} · layer {L} · head {h} of {model.config.num_attention_heads}")
    return 0


def model_report(c: Common) -> int:
    """Parameters per component, the network's shape, and KV-cache memory for one full context."""
    import torch

    from chatcli.engine.introspect import kv_cache_bytes, parameter_report
    from chatcli.inspectui.modelview import render_model

    model, _, label = open_model(c, max_seq_len=8)
    report = parameter_report(model)
    kv = {}
    context = model.config.max_position_embeddings
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        kv[name], context = kv_cache_bytes(model, context, dtype)
    render_model(console(c), label, model.config, report, kv, context)
    return 0
