"""`--compile auto|on|off`: the one-token decode step compiled ahead of time (AOTInductor) and kept on disk.

Decoding SmolLM2-135M in eager PyTorch spends about 4.5 ms of a 25 ms bf16 token in Python and operator dispatch
across 30 small layers. AOTInductor turns the whole step into one C++ function: the norms, RoPE and cache writes are
fused, and each dense linear layer (with the residual add folded in) calls oneDNN's prepacked GEMV.

How it fits with the rest of the engine:
- Only the one-token step is compiled: it runs for every generated token. Prompts stay eager (their length varies,
  and a graph with a dynamic token count decoded at 39 ms a token: its kernels lose the shape they were tuned for).
- The graph ends at the final norm; the unembedding runs eagerly after it, whatever its kind (the int4 mode's head is
  fbgemm's dynamic int8, whose packed weight is a TorchScript object, not a tensor), at the cost of one dispatch.
- The package holds code, not weights (`package_constants_in_so=False`). At load its constants are bound to the
  tensors the eager model already holds (`user_managed`): the same prepacked oneDNN (or int4) weights serve the
  eager prompt path and the compiled step, so memory stays one copy (a package with the weights inside took 544 MB
  of anonymous memory once loaded). What inductor derives from a weight (a frozen, prepacked copy; the int4 kernel's group size as a tensor)
  is numbered in call order, which is how the constants map finds its source.
- The KV caches are graph inputs, so both paths read and write the same cache; the position is the length of a
  `seq` input, so one graph serves every position.
- Building takes about a minute for SmolLM2 (export, inductor, a C++ compiler). The package is keyed by what it
  depends on (weights, dtype, quantization, context, CPU, torch, this engine's code), stored under the cache
  directory, and checked against eager on one step before it is kept. `on` builds it when missing; `auto` uses it
  when it is there (a one-shot `ask` must not wait a minute) and otherwise stays eager, while a chat has it built in
  a separate idle-priority process (engine/background.py) and switches to it between replies.
- Dense, int8 and int4 blocks of the Llama family and of Gemma 3 are covered. Gemma's local layers take their ring
  whole, under a mask the model computes outside the graph (decode_extras). Mistral's sliding window falls back to
  torch.compile of the step in process (`jit_decode`), which recompiles in every process (37-63 s for Gemma when
  it went that way): with freezing, inductor bypasses its graph caches.

Measured (SmolLM2-135M, 2 threads, `chatcli bench --compile on` and one-process A/B scripts): bf16 16-23 ms a token
against eager's 26-34; fp32 30-31 against 25-27 tok/s; int8 53-54 against 33-40; int4 126-140 against 78-80.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from chatcli.engine import cpu, fingerprint
from chatcli.engine.errors import EngineError

MODES = ("auto", "on", "off")


class CompileError(EngineError):
    """The decode step could not be compiled here (no C++ compiler, an export failure, a mismatch with eager)."""

    exit_code = 1


def aot_supported(model: nn.Module) -> bool:
    """True when MODEL's one-token step can be exported: its family says so for its config (Model.exportable), and
    its blocks' linear layers are all prepacked dense ones (quant "none") or all weight-only int4 and int8 ones (the unembedding
    runs outside the graph, so it may be anything)."""
    from chatcli.engine.linear import Int4Linear, Int8Linear, PackedLinear

    if not type(model).exportable(model.config):
        return False
    kinds = {type(m) for m in model.model.layers.modules() if _is_linear(m)}
    return kinds == {PackedLinear} or (bool(kinds) and kinds <= {Int4Linear, Int8Linear})


def aot_supported_config(quant: str, config, dtype: torch.dtype = torch.float32) -> bool:
    """What aot_supported() will say once a model of CONFIG (a ModelConfig) is loaded with QUANT at DTYPE, before
    loading it (the backend decides from this whether the weights are prepacked or left for torch.compile)."""
    from chatcli.engine.linear import can_pack
    from chatcli.engine.models import get_model_class

    if not get_model_class(config.model_type).exportable(config):
        return False
    return quant in ("int4", "int8") or (quant == "none" and can_pack(dtype))


def _is_linear(m: nn.Module) -> bool:
    """A layer that computes a projection: dense, packed or quantized."""
    from chatcli.engine.linear import DynamicInt8Linear, Int4Linear, Int8Linear, PackedLinear

    return isinstance(m, (nn.Linear, PackedLinear, Int8Linear, DynamicInt8Linear, Int4Linear))


def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of MODEL by name, tied ones under each of their names."""
    return {**dict(model.named_parameters(remove_duplicate=False)), **dict(model.named_buffers(remove_duplicate=False))}


def package_key(model: nn.Module, folder: Path) -> str:
    """The package's name: "VARIANT-DIGEST". VARIANT names what the package is for (the model folder, dtype, context
    length and the kind of every linear layer); DIGEST covers everything its code depends on besides (the weight
    files, config.json, the CPU, torch, and the engine's source, so a change to the graph or the constants map needs
    no version). A new build removes the packages of its variant that an older digest left behind.

    Not the thread count, which `--threads 0` picks per process from the load: inductor bakes the count of the build
    into its own loops, but in this step those are the small elementwise ones; the GEMVs (oneDNN) and attention
    follow torch.get_num_threads() at run time."""
    layers = [(n, type(m).__name__, getattr(m, "group_size", None)) for n, m in model.named_modules() if _is_linear(m)]
    variant = [str(folder.resolve()), str(model.compute_dtype), layers, model.max_seq_len]
    # The graph is this code traced: the model, its layers, the rope, this module. The whole engine is hashed rather
    # than a list of files that could miss one.
    engine = sorted(Path(__file__).parent.rglob("*.py"))
    parts = fingerprint.machine() + fingerprint.weights(folder) + fingerprint.sources(*engine)
    return f"{fingerprint.digest(variant)[:12]}-{fingerprint.digest(parts)[:24]}"


def drop_stale(package: Path) -> None:
    """Remove the packages of PACKAGE's variant other than PACKAGE itself (built for older weights or engine code),
    with their background builds' logs and failure notes."""
    variant = package.stem.split("-")[0]
    for old in package.parent.glob(f"{variant}-*"):
        if old.suffix in (".pt2", ".json", ".log", ".failed") and old.stem != package.stem:
            old.unlink(missing_ok=True)


class _DecodeStep(nn.Module):
    """What is exported: MODEL's forward for one token, with the KV caches (and the model's decode_extras, Gemma's
    ring mask) as inputs and the position as the length of `seq` minus one (a tensor dimension, so it stays
    symbolic: one graph for every position). It returns the final norm's output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, seq: torch.Tensor, extras: list[torch.Tensor], caches: list[torch.Tensor]) -> torch.Tensor:
        own = self.model.cache
        # The model's own cache objects around the graph's inputs: the same writes, into tensors the graph is given.
        cache = own.rows(0, 1)
        cache.layers = [type(layer)(caches[2 * i], caches[2 * i + 1]) for i, layer in enumerate(own.layers)]
        args = (tokens, seq.shape[0] - 1, cache) + ((extras,) if extras else ())
        return self.model.body(*args).float()


def _cache_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every layer's k and v cache, in layer order: the graph's `caches` input."""
    return [t for layer in model.cache.layers for t in (layer.k, layer.v)]


def _calls_in_order(model: nn.Module, kind: type) -> list[str]:
    """Names of MODEL's blocks' layers of KIND in the order one decode step calls them: the order in which inductor
    numbers what it derives from them (frozen weights, the int4 kernel's group-size constants)."""
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: order.append(name))
             for name, m in model.named_modules() if isinstance(m, kind) and name.startswith("model.layers.")]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 1, dtype=torch.long), 0)  # writes cache slot 0, which every prompt rewrites first
    finally:
        for h in hooks:
            h.remove()
    return order


class _Swapped:
    """For the export: each PackedLinear of the blocks replaced by a plain nn.Linear of the same shape (inductor
    freezes and packs plain weights; the values do not matter, since the package keeps none), the unembedding by an
    identity (it runs eagerly after the graph, whatever its kind: fbgemm's packed weights are not tensors). The KV
    caches are no module's buffers, so the graph takes them as inputs, not as constants."""

    def __init__(self, model: nn.Module):
        self.model, self.saved = model, []

    def __enter__(self):
        from chatcli.engine.linear import PackedLinear

        for name, m in list(self.model.model.layers.named_modules()):
            parent_name, _, attr = name.rpartition(".")
            parent = self.model.model.layers.get_submodule(parent_name) if parent_name else self.model.model.layers
            if isinstance(m, PackedLinear):
                plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
                plain.weight = nn.Parameter(torch.empty(m.out_features, m.in_features, dtype=m.dtype), requires_grad=False)
                plain.bias = m.bias
                self.saved.append((parent, attr, m))
                setattr(parent, attr, plain)
        self.saved.append((self.model, "lm_head", self.model.lm_head))
        self.model.lm_head = nn.Identity()
        return self

    def __exit__(self, *exc):
        for parent, attr, m in reversed(self.saved):
            setattr(parent, attr, m)


def build(model: nn.Module, path: Path) -> Path:
    """Export MODEL's decode step (up to the final norm), compile it with AOTInductor into PATH (a .pt2) and its
    constants map beside it (PATH.json); both are written only after the compiled step matched eager on one token.
    Raises CompileError."""
    import torch._inductor.config as inductor

    from chatcli.engine.linear import Int4Linear, PackedLinear

    order = {"packed": _calls_in_order(model, PackedLinear), "int4": _calls_in_order(model, Int4Linear)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompileError(f"cannot write the compiled step under {path.parent}: {e.strerror}") from e
    seq = torch.arange(model.max_seq_len)
    with torch.inference_mode():
        model(torch.tensor([[0, 1]]), 0)  # slots 0 and 1, so that a step at position 2 reads written values
    extras = model.decode_extras(2)
    model.decode_done(2)
    example = (torch.zeros(1, 1, dtype=torch.long), seq[:3], extras, _cache_tensors(model))
    S = torch.export.Dim("S", min=2, max=model.max_seq_len - 1)  # at max_seq_len the slice is the whole buffer
    # Freezing is what lets inductor prepack dense weights for oneDNN; int4 weights are packed already.
    freeze = bool(order["packed"])
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
            tmp_pkg = Path(tmp) / "step.pt2"
            # Freezing applies only with grad off. torch's own deprecation warnings from inside export are not the
            # user's to act on.
            with _Swapped(model), torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                step = _DecodeStep(model).eval()
                exported = torch.export.export(step, example, dynamic_shapes=(None, {0: S}, [None] * len(extras), [None] * len(example[3])))
                inductor.freezing = freeze
                torch._inductor.aoti_compile_and_package(
                    exported, package_path=str(tmp_pkg),
                    inductor_configs={"freezing": freeze, "aot_inductor.package_constants_in_so": False,
                                      "cpp.simdlen": cpu.inductor_simdlen()})
            constants = _constants_map(model, tmp_pkg, order)
            _check_against_eager(model, tmp_pkg, constants)
            tmp_map = Path(tmp) / "step.json"
            tmp_map.write_text(json.dumps(constants))
            os.replace(tmp_map, path.with_suffix(".json"))  # the map first: a package without its map is never used
            os.replace(tmp_pkg, path)
    except CompileError:
        raise
    except Exception as e:  # export, lowering and the C++ build fail in many ways; all mean "stay eager"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CompileError(f"could not compile the decode step: {type(e).__name__}: {first}") from e
    return path


def _constants_map(model: nn.Module, package: Path, order: dict[str, list[str]]) -> dict[str, list[str]]:
    """{graph constant: [kind, name]} for every constant the compiled step reads: ["packed", layer] for a frozen
    (prepacked) weight, numbered in call order; ["int4_group", layer] for the group size the int4 kernel takes as a
    tensor, also numbered in call order; ["tensor", parameter or buffer] for the rest, which keep their names."""
    loader = _load_package(package)
    names = loader.get_constant_fqns()

    def numbered(prefix: str) -> list[str]:
        return sorted((n for n in names if n.removeprefix(prefix).isdigit() and n.startswith(prefix)),
                      key=lambda n: int(n.removeprefix(prefix)))

    out: dict[str, list[str]] = {}
    for prefix, kind, layers in (("_frozen_param", "packed", order["packed"]), ("constant", "int4_group", order["int4"])):
        derived = numbered(prefix)
        if len(derived) != len(layers):
            raise CompileError(f"the compiled step derived {len(derived)} {kind} constants from {len(layers)} layers")
        out.update({n: [kind, layer] for n, layer in zip(derived, layers)})
    tensors = _named_tensors(model)
    for n in names:
        if n in out:
            continue
        own = n.removeprefix("model.")  # the exported module wraps the model as .model
        if own not in tensors:
            raise CompileError(f"the compiled step reads a constant chatcli cannot supply: {n}")
        out[n] = ["tensor", own]
    return out


def _load_package(package: Path):
    """AOTInductor's loader for PACKAGE. It extracts the package into $TMPDIR/aotinductor_XXXXXX and removes that
    only in its destructor, which a process ending in os._exit (`chatcli ask`, `chatcli chat`) or killed never runs:
    66 folders of 4 MB each had piled up in /tmp here. So it extracts into a folder of ours, removed once the library
    is loaded (it stays mapped; the destructor's own removal then finds nothing to do)."""
    scratch = tempfile.mkdtemp(prefix="chatcli-aoti-")
    with _environ(TMPDIR=scratch):
        try:
            return torch._C._aoti.AOTIModelPackageLoader(str(package), "model", True, 1, -1)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _environ(**values: str):
    """Environment variables set for the duration (C++ code reads them, so os.environ it is)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _bind(model: nn.Module, package: Path, constants: dict[str, list[str]]):
    """The package's runner with its constants bound to MODEL's own tensors (no copy). The caller keeps the returned
    tensors alive: a user-managed constant is not owned by the runner."""
    loader = _load_package(package)
    tensors = _named_tensors(model)
    bound = {}
    for name, (kind, target) in constants.items():
        if kind == "packed":
            bound[name] = model.get_submodule(target).packed
        elif kind == "int4_group":
            bound[name] = torch.tensor(model.get_submodule(target).group_size, dtype=torch.long)
        else:
            bound[name] = tensors[target]
    loader.load_constants(bound, False, True, True)  # active buffer, check that every constant is given, user-managed
    return loader, bound


def _compiled_step(model: nn.Module, package: Path, constants: dict[str, list[str]]):
    """step(tokens [1, 1], pos) -> logits [1, 1, vocab] float32 through the compiled PACKAGE, then the unembedding
    (the model's own bookkeeping around it: decode_extras before, decode_done after)."""
    runner, bound = _bind(model, package, constants)
    seq, inputs, dtype = torch.arange(model.max_seq_len), _cache_tensors(model), model.compute_dtype

    def step(tokens: torch.Tensor, pos: int) -> torch.Tensor:
        extras = model.decode_extras(pos)
        hidden = runner.run([tokens, seq[: pos + 1], *extras, *inputs])[0]  # the final norm's output, as float32 (exact)
        model.decode_done(pos)
        return model.unembed(hidden.to(dtype))

    step.constants = bound  # kept alive with the step
    return step


def _check_against_eager(model: nn.Module, package: Path, constants: dict[str, list[str]]) -> None:
    """One token through the compiled step and through eager from the same cache: the same choice, and logits that
    agree to within rounding (a wrongly bound weight gives unrelated logits)."""
    step = _compiled_step(model, package, constants)
    tok = torch.tensor([[1]])
    with torch.inference_mode():
        model(torch.tensor([[0, 1]]), 0)  # slots 0 and 1
        eager = model(tok, 2)[0, -1]
        model(torch.tensor([[0, 1]]), 0)  # the same state again (Gemma's rings track what they hold)
        compiled = step(tok, 2)[0, -1]
    cos = torch.nn.functional.cosine_similarity(eager, compiled, dim=0).item()
    if not (cos > 0.999 and int(eager.argmax()) == int(compiled.argmax())):
        raise CompileError(f"the compiled decode step disagrees with eager (cosine {cos:.4f}); not kept")


def attach(model: nn.Module, package: Path) -> nn.Module:
    """Route MODEL's one-token forward passes through the compiled PACKAGE; everything else stays eager."""
    step = _compiled_step(model, package, json.loads(package.with_suffix(".json").read_text()))
    eager = model.forward
    last = model.max_seq_len - 1

    def forward(tokens: torch.Tensor, start_pos=0, last_only: bool = False, cache=None) -> torch.Tensor:
        # Position 0 and the context's last slot are outside the graph's range (see build); both are rare. The
        # graph is bound to the model's own cache: batched decode (a tensor of positions) and other caches stay eager.
        if tokens.shape == (1, 1) and cache is None and isinstance(start_pos, int) and 1 <= start_pos < last:
            return step(tokens, start_pos)
        return eager(tokens, start_pos, last_only=last_only, cache=cache)

    model.forward = forward  # an instance attribute: nn.Module.__call__ finds it before the class's method
    model.compiled = "aot"
    return model


def package_path(model: nn.Module, folder: Path, cache_dir: Path) -> Path:
    """Where MODEL's (loaded from FOLDER) compiled step is kept under CACHE_DIR."""
    return cache_dir / f"{package_key(model, folder)}.pt2"


def is_stored(package: Path) -> bool:
    """True when PACKAGE and its constants map are both there (the map goes into place first)."""
    return package.is_file() and package.with_suffix(".json").is_file()


def use(model: nn.Module, mode: str, folder: Path, cache_dir: Path, on_build: Callable[[], None] | None = None) -> str:
    """Apply MODE to a loaded MODEL from FOLDER: "aot" (a package from CACHE_DIR, built first under "on"), "jit"
    ("on" for a model the ahead-of-time path does not cover) or "eager". on_build() is called before a build."""
    if mode == "off":
        return "eager"
    if not aot_supported(model):
        if mode == "on":
            jit_decode(model, cache_dir / "inductor")
            return "jit"
        return "eager"
    package = package_path(model, folder, cache_dir)
    if not is_stored(package):
        if mode != "on":
            return "eager"
        if on_build is not None:
            on_build()
        package.with_suffix(".failed").unlink(missing_ok=True)  # `on` tries again what a background build gave up
        build(model, package)
        drop_stale(package)
    attach_stored(model, package)
    return "aot"


def attach_stored(model: nn.Module, package: Path) -> nn.Module:
    """attach() a stored PACKAGE; one that cannot be loaded (a truncated or foreign file) is removed, so that `on`
    builds a sound one next time, and CompileError says so."""
    try:
        return attach(model, package)
    except Exception as e:
        for f in (package, package.with_suffix(".json")):
            f.unlink(missing_ok=True)
        raise CompileError(f"the stored compiled step {package.name} could not be loaded ({type(e).__name__}) and was "
                           "removed; --compile on builds it again") from e


def jit_decode(model: nn.Module, cache_dir: Path | None = None) -> nn.Module:
    """Route MODEL's one-token forward passes through torch.compile in this process (dynamic positions, so one
    graph serves every step); prompts stay eager. Returns MODEL."""
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir))
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    inductor.cpp.simdlen = cpu.inductor_simdlen()  # the vector ISA the CPU module allows
    inductor.freezing = True  # weights become constants: inductor prepacks them for oneDNN and folds what it can
    eager = model.forward
    compiled = torch.compile(eager, dynamic=True)

    def forward(tokens: torch.Tensor, start_pos=0, last_only: bool = False, cache=None) -> torch.Tensor:
        # Positions 0 and 1 stay eager: torch.compile specialises those two values, which would compile twice more.
        if tokens.shape == (1, 1) and cache is None and isinstance(start_pos, int) and start_pos >= 2:
            return compiled(tokens, start_pos)
        return eager(tokens, start_pos, last_only=last_only, cache=cache)

    model.forward = forward
    model.compiled = "jit"
    # Compile now rather than in the middle of the first reply, with one step at position 2 (slots 0 and 1 filled
    # first, so attention reads written values). Every prompt rewrites these slots before reading them.
    with torch.inference_mode():
        for pos in (0, 1, 2):
            model(torch.zeros(1, 1, dtype=torch.long), pos)
    return model
