"""`--compile on`: the torch.compile'd decode step gives the same tokens and logits as eager (issue 6).

Slow (inductor generates and builds C++ for the tiny model: tens of seconds on two cores), so one model, one test.
"""

from __future__ import annotations

import pytest
import torch

from chatcli.backends.base import Message, SamplingParams
from chatcli.backends.local import LocalBackend
from chatcli.errors import UsageError

pytestmark = pytest.mark.slow


def run(path, compile: str, quant: str = "none"):
    backend = LocalBackend(dtype="float32", quant=quant, compile=compile)
    backend.load(str(path))
    seen = []
    hook = backend.model.register_forward_hook(lambda m, a, out: seen.append(out[0, -1].clone()))
    params = SamplingParams(temperature=0.0, max_tokens=10)
    msgs = [Message("user", "Hello there")]
    text = "".join(c.text for c in backend.stream_chat(msgs, params))
    text2 = "".join(c.text for c in backend.stream_chat(msgs + [Message("assistant", text), Message("user", "More")], params))
    hook.remove()
    return backend, text + "|" + text2, torch.stack(seen)


def test_compiled_decode_matches_eager(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    from torch._dynamo.utils import counters

    eager_backend, eager_text, eager_logits = run(tiny_llama_dir, "off")
    counters.clear()
    backend, text, logits = run(tiny_llama_dir, "on")
    assert counters["stats"]["unique_graphs"] == 1  # one graph for every position, no recompiles per token
    assert getattr(backend.model, "compiled", False) and not getattr(eager_backend.model, "compiled", False)
    assert text == eager_text
    assert torch.allclose(logits, eager_logits, atol=1e-3, rtol=0)


def test_bad_compile_mode_is_a_usage_error(tiny_llama_dir):
    with pytest.raises(UsageError, match="auto, on, off"):
        LocalBackend(compile="sometimes").load(str(tiny_llama_dir))
