"""`chatcli bench`: how fast the local engine is on this machine, optionally next to transformers and llama.cpp."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Optional

import typer

from chatcli.settings import CHOICES


def _choices(name: str, *values: str) -> type[Enum]:
    """A str Enum of VALUES: how typer lists and checks a flag's choices (bench imports no torch, so the engine's own
    tuples cannot be read here)."""
    return Enum(name, {v: v for v in values}, type=str)


Dtype = _choices("Dtype", *CHOICES["dtype"])
Quant = _choices("Quant", *CHOICES["quant"])
Compile = _choices("Compile", *CHOICES["compile"])
Peer = _choices("Peer", "transformers", "llama_cpp")


ROWS = [("load_s", "load (s)", "{:.2f}"), ("ttft_s", "time to first token (s)", "{:.3f}"),
        ("prefill_tps", "prefill (tok/s)", "{:.0f}"), ("decode_tps", "decode (tok/s)", "{:.1f}"),
        ("turn2_ttft_s", "2nd turn TTFT (s)", "{:.3f}"), ("peak_rss_mb", "peak RSS (MB)", "{:.0f}"),
        ("cold_ask_s", "cold `ask`, first byte (s)", "{:.2f}")]


def _cell(summary: dict, key: str, fmt: str) -> str:
    value = summary.get(key)
    if value is None:
        return "-"
    span = summary.get("range", {}).get(key)
    text = fmt.format(value)
    return f"{text} [{fmt.format(span[0])}-{fmt.format(span[1])}]" if span and summary.get("runs", 1) > 1 else text


def render(report: dict, plain: bool) -> None:
    """The report as a table: medians [min-max] per engine, and chatcli's ratio to each peer (>1: chatcli better)."""
    from chatcli.ui import UI

    ui = UI(plain=plain)
    peers = {k: v for k, v in report["compare"].items() if "skipped" not in v}
    columns = ["", "chatcli"]
    for name in peers:
        columns += [name, "ratio"]
    rows = []
    for key, label, fmt in ROWS:
        row = [label, _cell(report, key, fmt)]
        for peer in peers.values():
            ratio = peer.get("ratio", {}).get(key)
            row += [_cell(peer, key, fmt), f"{ratio:.2f}x" if ratio else "-"]
        rows.append(row)
    ui.line(f"{report['model']} · {report.get('dtype')} · quant {report['quant']}"
            f"{' (' + report['quantized'] + ')' if report.get('quantized') else ''} · compile {report['compile']}"
            f"{' (' + report['compiled'] + ')' if report.get('compiled') else ''} · "
            f"{report.get('threads')} threads · {report['prompt_tokens']} prompt + {report['new_tokens']} new tokens · "
            f"median of {report.get('runs')} runs [min-max]")
    if report.get("cpu"):
        ui.line(f"CPU: {report['cpu']['summary']}")
    ui.table(columns, rows)
    t2 = report
    if t2.get("turn2_prompt_tokens"):
        ui.note(f"2nd turn: {t2['turn2_prompt_tokens']:.0f} tokens of which {t2['turn2_cached_tokens']:.0f} reused; "
                f"prefilling the {t2['turn2_prompt_tokens'] - t2['turn2_cached_tokens']:.0f} new ones alone takes "
                f"{t2['turn2_alone_s']:.3f} s (ratio {t2['turn2_ttft_s'] / t2['turn2_alone_s']:.2f})")
    if "transformers" in peers:
        ui.note("transformers keeps no cache between calls: its 2nd turn prefills the whole conversation")
    for name, peer in report["compare"].items():
        if "skipped" in peer:
            ui.note(f"{name}: skipped ({peer['skipped']})")
        elif peer.get("error"):
            ui.note(f"{name}: failed ({peer['error']})")
    other = report.get("other_busy_cores")
    if other is not None:
        busy = " (other work shared these cores, so the figures are low and noisy)" if other > 0.25 else ""
        ui.note(f"other processes kept {other:.2f} of {report['cpus']} CPUs busy meanwhile{busy}")


def register(app: typer.Typer) -> None:
    """Add `chatcli bench`."""

    @app.command("bench")
    def bench_cmd(
        model: Annotated[Optional[str], typer.Option("--model", "-m", help="A store name or a model folder (default: the configured model).")] = None,
        prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", min=1, max=4096, help="Prompt length for prefill.")] = 128,
        new_tokens: Annotated[int, typer.Option("--new-tokens", min=2, max=4096, help="Tokens to decode.")] = 128,
        runs: Annotated[int, typer.Option("--runs", min=1, max=20, help="Fresh processes per engine; medians are reported.")] = 3,
        dtype: Annotated[Optional[Dtype], typer.Option("--dtype", help="Weights and activations (default: the config's, auto).")] = None,
        quant: Annotated[Optional[Quant], typer.Option("--quant", help="Weight quantization (default: the config's).")] = None,
        compile: Annotated[Optional[Compile], typer.Option("--compile", help="The compiled decode step: auto (a stored one), on (build it once), off (default: the config's).")] = None,
        threads: Annotated[Optional[int], typer.Option("--threads", min=0, help="Torch threads, 0 for the default (default: the config's).")] = None,
        compare: Annotated[Optional[list[Peer]], typer.Option("--compare", help="Also run a peer on the same model: transformers, llama_cpp (repeatable).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        plain: Annotated[bool, typer.Option("--plain", help="Plain text, no colour.")] = False,
    ) -> None:
        """Measure load time, time to first token, prefill and decode speed, 2nd-turn latency and peak memory."""
        from chatcli import settings
        from chatcli.bench import bench
        from chatcli.store.resolve import resolve_model

        s = settings.load_settings()
        path = resolve_model(model or str(s["model"]))
        report = bench(
            path, prompt_tokens=prompt_tokens, new_tokens=new_tokens, runs=runs,
            dtype=(dtype.value if dtype else str(s["dtype"])), quant=(quant.value if quant else str(s["quant"])),
            compile=(compile.value if compile else str(s["compile"])), threads=int(threads if threads is not None else s["threads"] or 0),
            compare=tuple(dict.fromkeys(p.value for p in compare or ())),
        )
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            render(report, plain)
