"""`chatcli inspect ...`: see inside the local model (tokens, next-token odds, embeddings, attention, parameters).

Thin Typer wrappers; the work is in chatcli.inspectui (no torch imported here).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

app = typer.Typer(help="See inside the model: tokens, next-token probabilities, embeddings, attention, parameters.",
                  no_args_is_help=True, rich_markup_mode=None)

Model = Annotated[Optional[str], typer.Option("--model", "-m", help="A store name (see `chatcli models`) or a model folder.")]
Backend = Annotated[Optional[str], typer.Option("--backend", "-b", help="Must be local: inspect reads the weights in this process.")]
Dtype = Annotated[str, typer.Option("--dtype", help="Weights dtype: float32 (exact, default), bfloat16 or auto.")]
Plain = Annotated[bool, typer.Option("--plain", help="Plain text, no colour (also NO_COLOR, or when piped).")]
Top = Annotated[int, typer.Option("--top", help="How many tokens to list.")]
Mean = Annotated[bool, typer.Option("--mean", help="Average the embeddings of a word that is several tokens.")]


def _common(model, backend, dtype, plain):
    from chatcli.inspectui.load import Common

    return Common(model=model, backend=backend, dtype=dtype, plain=plain)


@app.command("tokens")
def tokens(
    text: Annotated[str, typer.Argument(help="The text to tokenize.")],
    model: Model = None, backend: Backend = None, dtype: Dtype = "float32", plain: Plain = False,
) -> None:
    """The text with token boundaries, each token's id and vocabulary entry, and characters per token."""
    from chatcli.inspectui import text as run

    raise typer.Exit(run.tokens(_common(model, backend, dtype, plain), text))


@app.command("next")
def next_(
    text: Annotated[str, typer.Argument(help="The text to continue (raw, no chat template).")],
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="The temperature shown beside T=1 (0: greedy).")] = 0.7,
    top: Top = 15,
    steps: Annotated[int, typer.Option("--steps", help="Walk this many generated tokens.")] = 1,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed for the sampled tokens.")] = None,
    model: Model = None, backend: Backend = None, dtype: Dtype = "float32", plain: Plain = False,
) -> None:
    """The likeliest next tokens at T=1 and at -t side by side, the entropy, and where the sampled token falls."""
    from chatcli.inspectui import text as run

    raise typer.Exit(run.next_token(_common(model, backend, dtype, plain), text, temperature, top, steps, seed))


@app.command("neighbours")
def neighbours(
    word: Annotated[str, typer.Argument(help="A word (a single token, or several with --mean).")],
    top: Top = 10, mean: Mean = False,
    model: Model = None, backend: Backend = None, dtype: Dtype = "float32", plain: Plain = False,
) -> None:
    """The tokens nearest to WORD by cosine similarity in the input embedding matrix."""
    from chatcli.inspectui import embed as run

    raise typer.Exit(run.neighbours(_common(model, backend, dtype, plain), word, top, mean))


@app.command("analogy", context_settings={"ignore_unknown_options": True})
def analogy(
    terms: Annotated[list[str], typer.Argument(help="WORD - WORD + WORD, e.g. king - man + woman.")],
    top: Top = 10, mean: Mean = False,
    model: Model = None, backend: Backend = None, dtype: Dtype = "float32", plain: Plain = False,
) -> None:
    """Vector arithmetic on word embeddings: the tokens nearest to king - man + woman, inputs excluded."""
    from chatcli.inspectui import embed as run

    raise typer.Exit(run.analogy(_common(model, backend, dtype, plain), terms, top, mean))


@app.command("attention")
def attention(
    text: Annotated[str, typer.Argument(help="The text whose attention pattern to show.")],
    layer: Annotated[int, typer.Option("--layer", "-l", help="Layer index (negative counts from the end).")] = 0,
    head: Annotated[Optional[int], typer.Option("--head", help="Show one head.")] = None,
    heads: Annotated[Optional[str], typer.Option("--heads", help="'all' (default) or a list like 0,3.")] = None,
    png: Annotated[Optional[str], typer.Option("--png", help="Write an image (a grid of the heads) to this file.")] = None,
    model: Model = None, backend: Backend = None, dtype: Dtype = "float32", plain: Plain = False,
) -> None:
    """The causal attention pattern softmax(QKᵀ/√d) of one layer as a heatmap, per head."""
    from chatcli.inspectui import internals as run

    raise typer.Exit(run.attention(_common(model, backend, dtype, plain), text, layer, head, heads, png))


@app.command("model")
def model_(model: Model = None, backend: Backend = None, dtype: Dtype = "float32", plain: Plain = False) -> None:
    """Where the parameters are (embedding, attention, MLP, norms, unembedding) and what a context's KV cache costs."""
    from chatcli.inspectui import internals as run

    raise typer.Exit(run.model_report(_common(model, backend, dtype, plain)))


def register(root: typer.Typer) -> None:
    """Add the `inspect` group."""
    root.add_typer(app, name="inspect")
