"""`--compile`: the ahead-of-time compiled decode step (and the torch.compile fallback) give what eager gives (issue 6).

Slow: inductor generates and builds C++ even for a tiny model (tens of seconds on two cores), so few models here.
"""

from __future__ import annotations

import pytest
import torch

from chatcli.backends.local import LocalBackend
from chatcli.engine import compile as compiling
from chatcli.errors import UsageError
from chatcli.repl.boot import stderr_notice
from chatcli.types import Message, SamplingParams

pytestmark = pytest.mark.slow


def run(path, compile: str, quant: str = "none"):
    """Two turns, greedy, through the local backend: (backend, the replies, the logits of every forward pass)."""
    backend = LocalBackend(dtype="float32", quant=quant, compile=compile)
    backend.on_notice = stderr_notice  # what the CLI does: notices while loading are one stderr line each
    backend.load(str(path))
    seen = []
    hook = backend.model.register_forward_hook(lambda m, a, out: seen.append(out[0, -1].clone()))
    params = SamplingParams(temperature=0.0, max_tokens=10)
    msgs = [Message("user", "Hello there")]
    text = "".join(c.text for c in backend.stream_chat(msgs, params))
    text2 = "".join(c.text for c in backend.stream_chat(msgs + [Message("assistant", text), Message("user", "More")], params))
    hook.remove()
    return backend, text + "|" + text2, torch.stack(seen)


def test_compiled_step_matches_eager_and_is_built_once(tiny_llama_dir, monkeypatch):
    """`on` builds the package; its tokens equal eager's and its logits agree within 1e-4 (float32), through the
    second turn's cache reuse; a later `auto` load binds the stored package instead of building again."""
    from chatcli.engine.loader import load_model

    _, eager_text, eager_logits = run(tiny_llama_dir, "off")
    # What an older chatcli or older weights left for the same variant is removed by the build; other variants stay.
    variant = compiling.package_key(load_model(tiny_llama_dir, "float32", quant="none"), tiny_llama_dir).split("-")[0]
    compiling_dir().mkdir(parents=True)
    stale, other = compiling_dir() / f"{variant}-0123456789ab.pt2", compiling_dir() / "0123456789ab-0123456789ab.pt2"
    for f in (stale, other):
        f.write_bytes(b"old")
        f.with_suffix(".json").write_text("{}")
    stale.with_suffix(".failed").write_text("an old failure\n")
    backend, text, logits = run(tiny_llama_dir, "on")
    assert backend.compiled == "aot"
    assert text == eager_text
    assert torch.allclose(logits, eager_logits, atol=1e-4, rtol=0)

    assert not any(stale.with_suffix(x).exists() for x in (".pt2", ".json", ".failed")) and other.exists()
    packages = [p for p in compiling_dir().glob("*.pt2") if p != other]
    assert len(packages) == 1 and packages[0].with_suffix(".json").is_file()  # the package and its constants map

    def no_build(*a, **k):
        raise AssertionError("built again")

    monkeypatch.setattr(compiling, "build", no_build)
    again, text_again, _ = run(tiny_llama_dir, "auto")
    assert again.compiled == "aot" and text_again == eager_text


def test_compiled_step_with_projection_biases_matches_eager(tiny_model_factory):
    """qwen2's q/k/v biases are constants the compiled step reads by name, bound to the eager model's own."""
    qwen = tiny_model_factory("qwen2")
    _, eager_text, eager_logits = run(qwen, "off")
    backend, text, logits = run(qwen, "on")
    assert backend.compiled == "aot" and text == eager_text
    assert torch.allclose(logits, eager_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("quant", ["int4", "int8"])
def test_compiled_quantized_step_matches_eager(tiny_llama_dir, quant):
    """Weight-only int4 (the kernel's group size bound as a constant) and int8 blocks in the graph, the 8-bit
    unembedding after it."""
    _, eager_text, eager_logits = run(tiny_llama_dir, "off", quant=quant)
    backend, text, logits = run(tiny_llama_dir, "on", quant=quant)
    assert backend.compiled == "aot" and text == eager_text
    assert torch.allclose(logits, eager_logits, atol=1e-2, rtol=0)


def compiling_dir():
    from chatcli import settings

    return settings.cache_dir() / "compiled"


def test_auto_without_a_package_stays_eager_and_builds_nothing(tiny_llama_dir, monkeypatch):
    monkeypatch.setattr(compiling, "build", lambda *a, **k: pytest.fail("auto must not build"))
    backend = LocalBackend(dtype="float32", compile="auto")
    backend.load(str(tiny_llama_dir))
    assert backend.compiled == "eager"


def test_a_failed_build_leaves_an_eager_backend_and_says_why(tiny_llama_dir, monkeypatch, capsys):
    """No C++ compiler (or any failure) under `on`: one line on stderr, and the model still answers, uncompiled."""
    def broken(model, path):
        raise compiling.CompileError("could not compile the decode step: no C++ compiler")

    monkeypatch.setattr(compiling, "build", broken)
    backend, text, _ = run(tiny_llama_dir, "on")
    assert backend.compiled == "eager" and text
    err = capsys.readouterr().err
    assert "no C++ compiler" in err and "decoding without it" in err and "Traceback" not in err


def test_a_broken_stored_package_is_removed_and_the_model_still_answers(tiny_llama_dir, capsys):
    """A truncated package (a full disk, a killed copy) under `auto`: one line on stderr, eager decoding, and the
    files are gone so that `on` builds a sound one."""
    from chatcli.engine.loader import load_model

    model = load_model(tiny_llama_dir, "float32", quant="none")
    package = compiling_dir() / f"{compiling.package_key(model, tiny_llama_dir)}.pt2"
    package.parent.mkdir(parents=True)
    package.write_bytes(b"PK\x03\x04 not a whole zip")
    package.with_suffix(".json").write_text("{}")
    backend, text, _ = run(tiny_llama_dir, "auto")
    assert backend.compiled == "eager" and text
    err = capsys.readouterr().err
    assert "could not be loaded" in err and "decoding without it" in err and "Traceback" not in err
    assert not package.exists() and not package.with_suffix(".json").exists()


def test_what_the_ahead_of_time_path_covers(tiny_model_factory):
    from chatcli.engine.config import ModelConfig
    from chatcli.engine.loader import load_model

    def covers(quant, folder):
        return compiling.aot_supported_config(quant, ModelConfig.from_folder(folder))

    llama = tiny_model_factory("llama")
    assert covers("none", llama)
    assert covers("int4", llama) and covers("int8", llama)
    assert covers("none", tiny_model_factory("gemma3")) and covers("int4", tiny_model_factory("gemma3"))

    dense, int4 = load_model(llama, "float32", quant="none"), load_model(llama, "float32", quant="int4")
    assert compiling.aot_supported(dense) and compiling.aot_supported(int4)
    assert compiling.package_key(dense, llama) != compiling.package_key(int4, llama)  # never each other's package
    assert not covers("none", tiny_model_factory("mistral", sliding_window=8))


def test_gemma3_compiled_step_matches_eager(tiny_model_factory):
    """Gemma 3's local layers keep a ring of 16 slots here (window 8): the two turns wrap it, and the compiled step,
    which takes the ring mask as an input, gives eager's tokens and logits within 1e-4 (float32)."""
    gemma = tiny_model_factory("gemma3")
    _, eager_text, eager_logits = run(gemma, "off")
    backend, text, logits = run(gemma, "on")
    assert backend.compiled == "aot"
    assert backend.model.ring_size == 16 and len(backend.model.cache.tokens[0]) > 2 * backend.model.ring_size
    assert text == eager_text
    assert torch.allclose(logits, eager_logits, atol=1e-4, rtol=0)


def test_jit_fallback_matches_eager(tiny_model_factory):
    """Mistral's sliding window is not exported: `on` compiles its step in process with torch.compile, with eager's
    tokens."""
    mistral = tiny_model_factory("mistral", sliding_window=8)
    _, eager_text, eager_logits = run(mistral, "off")
    backend, text, logits = run(mistral, "on")
    assert backend.compiled == "jit"
    assert text == eager_text
    assert torch.allclose(logits, eager_logits, atol=1e-3, rtol=0)


def test_bad_compile_mode_is_a_usage_error(tiny_llama_dir):
    with pytest.raises(UsageError, match="auto, on, off"):
        LocalBackend(compile="sometimes").load(str(tiny_llama_dir))


@pytest.mark.parametrize("arch", ["qwen3", "olmo2", "smollm3", "phi3"])
def test_new_families_take_the_ahead_of_time_path(tiny_model_factory, arch):
    """Qwen3, OLMo 2, SmolLM3 and Phi-3 are built on the Llama block, so their one-token step exports as its does;
    Phi-3-mini-4k's sliding window cannot be exported and falls back to torch.compile."""
    from chatcli.engine.config import ModelConfig

    folder = tiny_model_factory(arch)
    assert all(compiling.aot_supported_config(q, ModelConfig.from_folder(folder)) for q in ("none", "int8", "int4"))
    assert not compiling.aot_supported_config("none", ModelConfig.from_folder(tiny_model_factory("phi3_window")))


@pytest.mark.parametrize("arch", ["phi3", "olmo2"])  # partial rotary and a fused checkpoint; norms after the sublayers
def test_new_family_compiled_step_matches_eager(tiny_model_factory, arch):
    path = tiny_model_factory(arch)
    _, eager_text, eager_logits = run(path, "off")
    backend, text, logits = run(path, "on")
    assert backend.compiled == "aot" and text == eager_text
    assert torch.allclose(logits, eager_logits, atol=1e-4, rtol=0)
