"""`inspect model`: where the parameters are, the shape of the network, and what a context's KV cache costs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatcli.inspectui.common import bar, human_bytes, human_count, is_plain

DTYPE_NAMES = {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}


def render_model(console: Console, label: str, config, report, kv: dict[str, int], context: int) -> None:
    """Parameter counts per component with bars, the config that sets them, and KV-cache memory per dtype."""
    plain = is_plain(console)
    dim = "" if plain else "dim"
    dtype = DTYPE_NAMES.get(str(report.dtype), str(report.dtype))
    console.print(Text(f"{label} · {config.model_type} · {report.total:,} parameters ({human_count(report.total)}) · "
                       f"{human_bytes(report.bytes)} in {dtype}", style="" if plain else "bold"))
    width = max(10, min(40, console.width - 50))
    t = Table("component", "parameters", "share", "", box=None, pad_edge=False, header_style="" if plain else "bold")
    for name, n in report.counts.items():
        share = n / report.total if report.total else 0.0
        shown = f"{n:,}" if not (name == "unembedding" and report.tied) else "0 (tied)"
        t.add_row(name, shown, f"{100 * share:5.1f}%", Text(bar(share, width), style="" if plain else "cyan"))
    t.add_row("total", f"{report.total:,}", "100.0%", "")
    console.print(t)
    if report.tied:
        console.print(Text("unembedding (lm_head) is tied to the embedding matrix: the same weights, counted once, "
                           "under embedding", style=dim))
    c = config
    group = c.num_attention_heads // c.num_key_value_heads
    console.print(Text(
        f"{c.num_hidden_layers} layers · hidden {c.hidden_size} · MLP {c.intermediate_size} · {c.num_attention_heads} query heads, "
        f"{c.num_key_value_heads} key/value heads (groups of {group}) · head_dim {c.head_dim} · vocabulary {c.vocab_size:,}",
        style=dim))
    per_dtype = ", ".join(f"{human_bytes(b)} in {name}" for name, b in kv.items())
    per_token = ", ".join(f"{human_bytes(b / context)} in {name}" for name, b in kv.items())
    console.print(Text(f"context {context:,} tokens · KV cache for one full context: {per_dtype} "
                       f"(per token: {per_token})", style=dim))
    full = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * context * 4  # every layer caching everything
    if kv.get("float32", full) < full:
        console.print(Text(f"sliding-window layers keep only their window, so this is less than the "
                           f"{human_bytes(full)} (float32) that full caches on every layer would take", style=dim))
