"""Load a model folder: config.json, then model.safetensors or the shards of its index, memory-mapped."""

from __future__ import annotations

import contextlib
import mmap
import re
from pathlib import Path

import torch

from chatcli.engine import cpu, quantstore
from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.linear import can_pack
from chatcli.engine.models import get_model_class
from chatcli.engine.models.base import MissingTensors
from chatcli.engine.quant import quantize as quantize_block
from chatcli.engine.weights import load_state, release_file_pages


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """float32 or bfloat16; "auto"/None picks bfloat16 only where the CPU has native bf16 arithmetic and oneDNN packs
    it (engine/cpu.py), because elsewhere bf16 is emulated and slower than float32 while still losing precision.

    Measured on the 2-core AVX512-BF16 target with SmolLM2-135M (`chatcli bench`, 2 threads): PyTorch's plain bf16
    GEMV is slow (about 15 GB/s, so bf16 barely beat float32), but with the weights prepacked for oneDNN (what the
    local backend does) bfloat16 decodes 29.8 tok/s against float32's 21.3 and prefills 888 tok/s against 617,
    at half the memory, and agrees with float32's greedy choice 98% of the time. So bfloat16 stays the default."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dtype = cpu.auto_dtype()
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ModelLoadError(f"dtype {dtype!r} is not supported; use float32 or bfloat16")
    return table[dtype]


def load_model(path: str | Path, dtype: str | torch.dtype | None = None, max_seq_len: int | None = None, quant: str | None = None,
               *, record: dict | None = None, use_stored: bool = True):
    """Build the architecture named by config.json and load its weights with a strict name and shape check.

    quant: when given, engine.quant.quantize(model, quant) is applied block by block as the weights are converted
    ("none" prepacks the dense weights), which keeps the peak memory near the final size. A current stored
    quantization of the folder (engine/quantstore.py) is used instead of quantizing, unless use_stored is False;
    model.quantized_from names it. record: filled with {path: quantized layer} (what quantsave.save stores).
    """
    folder = Path(path)
    dtype = resolve_dtype(dtype)
    maps: list[mmap.mmap] = []
    config, model, state, _ = _matched(folder, maps)
    # The checkpoint's tensors by block, each block sanitized (stacked into its fused layers) only when its turn comes,
    # so the stacked copies of one block at a time exist beside views of the file.
    blocks: dict[int, dict] = {}
    for name in list(state):
        if m := LAYER_KEY.match(name):
            blocks.setdefault(int(m.group(1)), {})[name] = state.pop(name)
    model.load_state_dict(model.sanitize(state), strict=False, assign=True)  # views of the file
    del state
    model.tie_weights()
    model.eval().requires_grad_(False)
    model.weight_maps = maps
    quantize = None if quant is None else quantize_block
    stored = None
    if quant not in (None, "none") and use_stored:
        stored = quantstore.open_stored(folder, quant, dtype)
    model.quantized_from = None if stored is None else stored.path
    # What the load chose for this CPU that the user would not expect, said once per load by the caller.
    model.load_notes = []
    if quant == "none" and dtype == torch.bfloat16 and not can_pack(dtype):
        model.load_notes.append(
            f"bfloat16 weights compute through PyTorch's plain bf16 matmul: this CPU ({cpu.info().level}) lacks what "
            "oneDNN's packed bf16 kernels need (AVX512 BW/VL/DQ or AVX-NE-CONVERT); --dtype float32 prefills faster here")
    paths = {id(m): name for name, m in model.named_modules()}
    # Load (sanitized), convert, prepare and quantize one block at a time, letting the file's pages go after each: the process
    # never holds the file, a converted copy and a packed copy of the whole model at once.
    keep = _narrow_embedding(model, dtype, replaced_head=quant is not None and (quant != "none" or can_pack(dtype)))

    def finish(module, own: dict | None = None) -> None:
        if own is not None:
            # Cast before sanitize stacks the parts: the stacking then copies the compute dtype's bytes (half of a
            # float32 file's when computing in bfloat16), and no stacked float32 copy is made only to be cast.
            own = {k: v.to(dtype) if v.is_floating_point() and v.dtype != dtype else v for k, v in own.items()}
            model.load_state_dict(model.sanitize(own), strict=False, assign=True)
        _convert(module, dtype, keep)
        if hasattr(module, "prepare"):
            module.prepare()
        if quantize is not None:
            prefix = paths[id(module)] + "." if paths[id(module)] else ""
            quantize(module, quant, dtype=dtype, prefix=prefix, stored=stored, record=record)
        release_file_pages(model)

    if quantize is not None:
        # The unembedding first, while the blocks are still in the file: its converted copy and its packed or quantized
        # one (113 MB each for SmolLM2 in float32) then never sit beside the converted blocks, which lowers the peak.
        quantize(model, quant, only="lm_head", dtype=dtype, stored=stored, record=record)
        release_file_pages(model)
    for i, block in enumerate(getattr(getattr(model, "model", None), "layers", ())):
        finish(block, blocks.pop(i, {}))
    finish(model)  # what is left outside the blocks: embedding, final norm, unembedding
    if max_seq_len is None:
        max_seq_len = context_that_fits(config, dtype, model.load_notes)
    model.setup_cache(max_seq_len)
    return model


LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.")
# The share of free memory the KV cache may take by default; the weights are already in, and the rest is for the
# activations of a long prefill and for whatever else the machine runs.
KV_SHARE = 0.5


def _check_layer_count(folder: Path, config: ModelConfig, state: dict) -> None:
    """num_hidden_layers against the blocks the files hold, before the model is built from the config's number."""
    found = {int(m.group(1)) for name in state if (m := LAYER_KEY.match(name))}
    # Blocks beyond the config's count are reported with the other unexpected tensors; whole blocks missing get this.
    if found and config.num_hidden_layers > max(found) + 1:
        raise ModelLoadError(
            f"{folder}: config.json says num_hidden_layers {config.num_hidden_layers} but the weights hold "
            f"{len(found)} blocks (indices {min(found)}..{max(found)}); the config and weights do not belong together"
        )


def context_that_fits(config: ModelConfig, dtype: torch.dtype, notes: list[str] | None = None) -> int:
    """The model's context, or fewer positions where a KV cache for all of them would not fit in KV_SHARE of the free
    memory: a config may claim millions of positions, and the cache is allocated up front."""
    per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * dtype.itemsize
    per_position += 2 * config.head_dim * 4 * 2  # the cos/sin tables, float32 and then in the compute dtype
    free = cpu.available_memory()
    context = config.max_position_embeddings
    if free is None:
        return context
    fits = max(1, int(free * KV_SHARE) // per_position)
    if fits >= context:
        return context
    if notes is not None:
        notes.append(
            f"the KV cache holds {fits:,} positions, not the model's {context:,}: that is what half of the free memory "
            f"({free / 2**30:.1f} GiB) holds; longer conversations drop their oldest turns"
        )
    return fits


def check_folder(path: str | Path) -> ModelConfig:
    """Everything load_model checks before reading a weight: the config's values, the architecture, and every tensor's
    name, shape and dtype against what the config implies. Cheap (headers and a model on the meta device), so that
    `import` and the store listing refuse what `ask` would."""
    maps: list[mmap.mmap] = []
    try:
        return _matched(Path(path), maps)[0]
    finally:
        for mm in maps:
            with contextlib.suppress(BufferError):  # a view may still be alive until garbage collection
                mm.close()


def _matched(folder: Path, maps: list):
    """(config, model on the meta device, the file's tensors as the checkpoint names them, the tensors the model
    expects), checked against each other after the family's sanitize (on meta tensors: names and shapes only)."""
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: not a model folder")
    config = ModelConfig.from_folder(folder)
    Model = get_model_class(config.model_type)
    state = load_state(folder, maps)
    _check_layer_count(folder, config, state)
    try:
        with torch.device("meta"), _skip_init():
            model = Model(config)
    except ModelLoadError as e:  # a family's own checks know the key, not the folder
        raise ModelLoadError(str(e).replace("config.json:", f"{folder / 'config.json'}:", 1)) from None
    expected = {k: v for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    ghosts = {name: torch.empty(t.shape, dtype=t.dtype, device="meta") for name, t in state.items()}
    lacking: list[str] = []
    try:
        ghosts = model.sanitize(ghosts)
    except MissingTensors as e:  # parts of a fused layer: named as the checkpoint names them, not as the fused layer
        ghosts, lacking = e.state, e.names
        expected = {k: v for k, v in expected.items() if k not in e.unbuilt}
    except ModelLoadError as e:
        raise ModelLoadError(f"{folder}: weights do not match config.json: {e}") from None
    missing = lacking + sorted(set(expected) - set(ghosts))
    unexpected = sorted(set(ghosts) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    for name, ref in expected.items():
        if name in ghosts and tuple(ghosts[name].shape) != tuple(ref.shape):
            problems.append(f"{name} has shape {list(ghosts[name].shape)}, config.json implies {list(ref.shape)}")
        elif name in ghosts and ref.is_floating_point() and not ghosts[name].is_floating_point():
            problems.append(f"{name} is stored as {str(ghosts[name].dtype).removeprefix('torch.')}; weights must be floating point")
    if problems:
        raise ModelLoadError(f"{folder}: weights do not match config.json: " + "; ".join(problems))
    return config, model, state, expected


@contextlib.contextmanager
def _skip_init():
    """Skip the random initialisation of layers built on the meta device: the weights come from the file anyway, and
    a meta tensor's normal_() imports torch._dynamo, which cost a cold `chatcli ask` a whole second."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
             "trunc_normal_", "constant_", "ones_", "zeros_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    for n in names:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def _convert(module: torch.nn.Module, dtype: torch.dtype, keep: set[int] = frozenset()) -> None:
    """Cast MODULE's floating-point parameters to DTYPE in place, but those whose id() is in KEEP (quantized layers
    keep their scales in buffers)."""
    for p in module.parameters():
        if p.is_floating_point() and p.dtype != dtype and id(p) not in keep:
            p.data = p.data.to(dtype)


def _narrow_embedding(model, dtype: torch.dtype, replaced_head: bool) -> set[int]:
    """{id} of an embedding table to leave in the file's 16-bit dtype when DTYPE is float32, else nothing.

    Widening bfloat16 or float16 to float32 is exact, so the model widens the rows it looks up instead of the whole
    table: the table stays a view of the file, and only the rows of tokens seen are ever read (SmolLM2 in float32:
    113 MB less memory). A tied unembedding computes from the table, so it must then be replaced (packed or
    quantized) from a widened copy (REPLACED_HEAD); the plain layer would multiply float32 activations by 16-bit
    weights.
    """
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if embed is None or dtype != torch.float32 or embed.weight.dtype not in (torch.bfloat16, torch.float16):
        return set()
    head = getattr(model, "lm_head", None)
    if head is not None and head.weight is embed.weight and not replaced_head:
        return set()
    return {id(embed.weight)}
