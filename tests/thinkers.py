"""A tiny Qwen3 that thinks: the tiny Qwen3 of tinymodels.py (real Qwen3 tokenizer and chat template), trained in
the test to answer every question with `<think>\\nREASONING\\n</think>\\n\\nANSWER`, as a trained Qwen3 does.

Paths that run chatcli in a subprocess (ask, the REPL in a pty) cannot be handed a logits processor that forces the
markers, so the weights themselves have to write them. No Qwen3 weights are reachable here, and a two-layer model
learns one fixed reply in about a minute; it is trained on varied prompts (with and without a system prompt, after
zero to two earlier exchanges) so that any question, under any system prompt, in any turn, gets the same reply at
temperature 0.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

THOUGHT = "The user greets me, so I greet back."
REPLY = "Hello! Paris is in France."
SCRIPT = f"<think>\n{THOUGHT}\n</think>\n\n{REPLY}"
WORDS = ("hello world what is paris the capital of france please tell me a short story about code python "
         "fox dog quick brown lazy answer question why how many").split()


def _shipped_systems(rnd: random.Random) -> list[str]:
    """The bodies of chatcli's own prompt files (what `ask` and `chat` send by default), variables filled at random."""
    import re

    folder = Path(__file__).parent.parent / "chatcli" / "data" / "prompts"
    bodies = [f.read_text(encoding="utf-8").split("---", 2)[-1].strip() for f in sorted(folder.glob("*.md"))]
    return [re.sub(r"{{\s*\w+\s*}}", lambda _: rnd.choice(WORDS), b) for b in bodies for _ in range(2)]


def _prompts(seed: int, n: int) -> list[list[dict]]:
    rnd = random.Random(seed)
    shipped = _shipped_systems(rnd)
    out = []
    for i in range(n):
        user = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 12)))
        msgs = [{"role": "user", "content": user.capitalize() + rnd.choice(("?", ".", "!", ""))}]
        for _ in range(i % 3):  # earlier exchanges, as the template renders them (their reasoning dropped)
            earlier = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 8)))
            msgs[:0] = [{"role": "user", "content": earlier}, {"role": "assistant", "content": REPLY}]
        if i % 4 == 1:
            system = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 40)))
            msgs.insert(0, {"role": "system", "content": system})
        elif i % 4 == 3:
            msgs.insert(0, {"role": "system", "content": shipped[(i // 4) % len(shipped)]})
        out.append(msgs)
    return out


def train_thinker(folder: Path, steps: int = 300, seed: int = 0) -> Path:
    """Train the model in FOLDER (in place) to reply SCRIPT then <|im_end|> to any prompt."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from chatcli.engine.tokenizer import load_tokenizer
    from chatcli.templates import render_chat

    tok = load_tokenizer(folder)
    reply = tok.encode(SCRIPT) + [tok.encode("<|im_end|>")[0]]
    rows = []
    for msgs in _prompts(seed, 32):
        prompt = tok.encode(render_chat(tok.chat_template, msgs).text)
        rows.append((prompt, reply))
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        seq = p + r
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(p) : len(seq)] = torch.tensor(r)

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(folder))  # float32: the config says so
    model.train()
    # The (tied) embedding stays as it is: its gradient is most of the cost, and the layers alone learn the reply.
    model.model.embed_tokens.weight.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    done = 0
    for _ in range(steps):
        # Only the reply's positions go through the 151k-wide head: the prompt needs no logits.
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        where = labels[:, 1:] != -100
        logits = model.lm_head(hidden[:, :-1][where])
        loss = torch.nn.functional.cross_entropy(logits, labels[:, 1:][where])
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        # Greedy decoding needs every reply token on top (the first one most: it opens the reasoning), with a margin.
        if loss.item() < 0.01 and bool((logits.argmax(-1) == labels[:, 1:][where]).all()):
            break
    state = load_file(str(folder / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    trained = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k in state}
    assert trained.keys() == state.keys(), set(state) ^ set(trained)
    save_file(trained, str(folder / "model.safetensors"))
    (folder / "trained.json").write_text(json.dumps({"steps": done, "loss": loss.item()}))
    return folder


@pytest.fixture(scope="session")
def tiny_qwen3_thinker_dir(tmp_path_factory, tiny_qwen3_dir) -> Path:
    """A tiny Qwen3 (real tokenizer and template) trained to reply SCRIPT to anything (read-only)."""
    from chatcli.store.fsutil import store_lock

    # Training takes most of a minute, so pytest-xdist's workers share one: the first trains it under a lock in the
    # run's common temporary folder, the others wait and reuse it.
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "tiny-qwen3-thinker"
    with store_lock(shared, "tiny-qwen3-thinker"):
        if not (folder / "trained.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(tiny_qwen3_dir, folder)
            train_thinker(folder)
    return folder
