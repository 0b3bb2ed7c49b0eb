"""`chatcli backends` (what can produce tokens, and where each came from) and `chatcli serve` (the OpenAI API)."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Optional

import typer

from chatcli.commands.chat import choices

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def backends(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per backend, a line each.")] = False,
) -> None:
    """List the backends: registered plugins (entry points) and [backends.NAME] profiles from the config."""
    from chatcli.backends.registry import available
    from chatcli.settings import config_path, load_settings

    rows = []
    for info in sorted(available().values(), key=lambda i: i.name):
        rows.append({"name": info.name, "target": info.target,
                     "source": f"{info.dist} {info.version}".strip(), "kind": "plugin"})
    settings = load_settings()
    profiles = settings.raw.get("backends", {})
    for name, profile in sorted(profiles.items() if isinstance(profiles, dict) else []):
        if not isinstance(profile, dict):
            continue
        kind = str(profile.get("type", "openai"))
        target = f"{kind} -> {profile.get('base_url', '(default base_url)')}"
        if profile.get("model"):
            target += f" (model {profile['model']})"
        # The api_key is never shown: only whether one is set.
        if profile.get("api_key") or profile.get("api_key_env"):
            target += " [api key set]"
        rows.append({"name": name, "target": target, "source": f"config ({config_path()})", "kind": "profile"})
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    header = {"name": "NAME", "target": "TARGET", "source": "SOURCE"}
    widths = {k: max(len(r[k]) for r in [header, *rows]) for k in ("name", "target")}
    for row in [header, *rows]:
        typer.echo(f"{row['name']:<{widths['name']}}  {row['target']:<{widths['target']}}  {row['source']}".rstrip())


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback exposes the model to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0 picks a free one and prints it).")] = 8000,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="A store name or a model folder (default: the config's model).")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="local (default), openai, a plugin, or a [backends.NAME] profile.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Upstream server when serving through the openai backend.")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="CHATCLI_SERVE_API_KEY", show_envvar=True,
                                                   help="Require this bearer token from clients.")] = None,
    alias: Annotated[Optional[list[str]], typer.Option("--alias", metavar="NAME", help="Another model name clients may ask for (repeatable); any other name gets 404 model_not_found.")] = None,
    max_queue: Annotated[int, typer.Option("--max-queue", min=0, help="Requests that may wait for the engine; more get 503 with Retry-After.")] = 16,
    parallel: Annotated[int, typer.Option("--parallel", "-np", min=1, max=64, help="Requests generating at once (the local backend batches their decode steps; 1: one at a time, with the compiled step).")] = 4,
    kv_budget: Annotated[Optional[int], typer.Option("--kv-budget", min=2, help="KV-cache positions all parallel requests hold together, split evenly among them (default: a full context each, or what half the free memory holds).")] = None,
    cache_ram: Annotated[int, typer.Option("--cache-ram", min=0, metavar="MB", help="Memory for the KV prefixes finished requests leave (a repeated system prompt starts from there); 0 turns it off.")] = 1024,
    dtype: Annotated[Optional[choices("dtype")], typer.Option("--dtype", help="Weights dtype for the local backend.")] = None,
    quant: Annotated[Optional[choices("quant")], typer.Option("--quant", help="Weight quantisation for the local backend.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Torch threads for the local backend (0: all cores).")] = None,
    compile: Annotated[Optional[choices("compile")], typer.Option("--compile", help="The compiled decode step of the local backend: auto (use a stored one, else build one in the background), on (build it now), off.")] = None,
) -> None:
    """Serve a model over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, /health)."""
    from chatcli.backends.registry import make_backend, model_for
    from chatcli.repl.boot import compile_in_background
    from chatcli.server import serve as run_server
    from chatcli.server.run import bind
    from chatcli.settings import load_settings

    sock = bind(host, port)  # a busy port fails now, not after loading the model
    words = {k: v.value for k, v in (("dtype", dtype), ("quant", quant), ("compile", compile)) if v is not None}
    settings = load_settings().apply_flags(model=model, backend=backend, threads=threads, **words)
    engine = make_backend(settings["backend"], settings, base_url=base_url)
    model_name = model_for(settings["backend"], settings)
    if hasattr(engine, "on_notice"):  # what the backend says while loading, on stderr as the rest of serve's lines
        engine.on_notice = lambda notice: sys.stderr.write(f"chatcli serve: {notice.text}\n")
    engine.load(model_name)
    # A backend that cannot take concurrent calls serves one at a time.
    parallel = engine.serve_parallel(parallel, kv_budget, cache_ram) if hasattr(engine, "serve_parallel") else 1
    if parallel == 1:
        compile_in_background(engine)  # what it started, if anything, its notice said on stderr
    model_id = os.path.basename(model_name.rstrip("/\\")) if os.sep in model_name else model_name
    if host not in LOOPBACK and not api_key:
        sys.stderr.write(f"chatcli serve: warning: listening on {host} without --api-key; anyone who can reach "
                         f"this port can use the model\n")

    def ready(url: str) -> None:
        sys.stderr.write(f"chatcli serve: {model_id} ({getattr(engine, 'name', settings['backend'])} backend, "
                         f"{parallel} request{'s' if parallel > 1 else ''} at once) "
                         f"at {url}; Ctrl-C stops\n")
        sys.stderr.flush()

    try:
        run_server(engine, model_id, host=host, port=port, api_key=api_key, max_queue=max_queue, on_ready=ready,
                   sock=sock, aliases=tuple(alias or ()), parallel=parallel)
    finally:
        engine.close()


def register(app: typer.Typer) -> None:
    """Add `backends` and `serve`."""
    app.command("backends")(backends)
    app.command("serve")(serve)
