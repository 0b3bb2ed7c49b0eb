"""Tiny random models written in the test: a real config.json, safetensors weights, and a BPE tokenizer trained here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog. Hello world! Paris is the capital of France.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5",
    "Emoji 😀🎉 and CJK 你好世界 日本語 and accents café naïve, combining e\u0301.",
    "    runs   of    spaces\n\n\nand newlines\t\ttabs",
    "User: What is the capital of France?\nAI Assistant: The capital of France is Paris.",
]

ARCHS = {
    "llama": dict(model_type="llama", architectures=["LlamaForCausalLM"]),
    "llama3_rope": dict(
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
    ),
    # YaRN with a window smaller than the test prompts, so the interpolated band is reached.
    "llama_yarn": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], max_position_embeddings=256,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    ),
    # Llama 3.2 1B/3B in small: tied head, grouped kv heads, llama3 scaling (factor 32) with an original context of 32
    # so the 120-token parity run is well inside the scaled band.
    "llama3_2": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], tie_word_embeddings=True, rope_theta=500000.0, head_dim=16,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
    ),
    # Llama 3.2 (1B, 3B): llama3 rope scaling, a tied head, head_dim 64 with more heads than kv heads.
    "llama32": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], tie_word_embeddings=True, hidden_size=128, num_attention_heads=2,
        num_key_value_heads=1, rope_theta=500000.0, max_position_embeddings=1024,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    ),
    "llama_tied": dict(model_type="llama", architectures=["LlamaForCausalLM"], tie_word_embeddings=True),
    "mistral": dict(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=16),
    "qwen2": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], use_sliding_window=False, tie_word_embeddings=True),
    "olmo2": dict(model_type="olmo2", architectures=["Olmo2ForCausalLM"]),
    # Four layers so the default (a NoPE layer every 4th) has one; the explicit list turns off two others. The pad id
    # is set because transformers defaults it to 128004, outside a tiny vocabulary.
    "smollm3": dict(model_type="smollm3", architectures=["SmolLM3ForCausalLM"], pad_token_id=0, num_hidden_layers=4, tie_word_embeddings=True),
    "smollm3_listed": dict(model_type="smollm3", architectures=["SmolLM3ForCausalLM"], pad_token_id=0, num_hidden_layers=3, no_rope_layers=[0, 1, 0]),
    # head_dim 24 is not hidden_size / heads (16), as in the released Qwen3 sizes.
    "qwen3": dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], head_dim=24, tie_word_embeddings=True),
    "qwen3_untied": dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], head_dim=24),
    # Phi-4-mini in small: a tied head, three quarters of each 16-wide head rotating (6 frequencies), longrope with an
    # original context of 8 so every run is past it (the long factors and the attention factor apply on both sides).
    "phi3": dict(
        model_type="phi3", architectures=["Phi3ForCausalLM"], pad_token_id=0, tie_word_embeddings=True, partial_rotary_factor=0.75,
        original_max_position_embeddings=8, rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                                                          "long_factor": [1.0, 1.5, 3.0, 6.0, 12.0, 24.0]},
    ),
    # The original context (64) falls inside the second prefill chunk (60..100): that chunk and every later step use
    # the long factors, the first chunk's keys keep the short ones, as in transformers.
    "phi3_crossing": dict(
        model_type="phi3", architectures=["Phi3ForCausalLM"], pad_token_id=0, partial_rotary_factor=0.5,
        original_max_position_embeddings=64, rope_scaling={"type": "longrope", "short_factor": [1.0, 1.2, 1.5, 2.0],
                                                           "long_factor": [1.0, 4.0, 16.0, 64.0]},
    ),
    # Phi-3-mini-4k in small: whole heads rotate, short factors (the run stays within the original context), a window.
    "phi3_window": dict(
        model_type="phi3", architectures=["Phi3ForCausalLM"], pad_token_id=0, sliding_window=16, original_max_position_embeddings=256,
        rope_scaling={"type": "longrope", "short_factor": [1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4], "long_factor": [2.0] * 8},
    ),
    # A window of 8 so that short test prompts already slide; head_dim is not hidden_size / heads, as in the real ones.
    "gemma3": dict(
        model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], tie_word_embeddings=True, num_hidden_layers=3,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], sliding_window=8, head_dim=32,
        query_pre_attn_scalar=24, rope_theta=1000000.0, rope_local_base_freq=10000.0, hidden_activation="gelu_pytorch_tanh",
    ),
}


def train_tokenizer(folder: Path) -> int:
    """Train a byte-level BPE tokenizer.json into FOLDER; return its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return tok.get_vocab_size()


def checkpoint_shapes(model) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor as a checkpoint of MODEL's family stores it, in the model's order: the layers the
    family fuses (its `fused` table, which its sanitize stacks) split back into their parts, as transformers names them."""
    c, fused, out = model.config, getattr(model, "fused", {}), []
    for name, p in model.state_dict().items():
        module, _, kind = name.rpartition(".")
        prefix, _, leaf = module.rpartition(".")
        if leaf not in fused:
            out.append((name, tuple(p.shape)))
            continue
        parts = fused[leaf]
        kv = c.num_key_value_heads * c.head_dim
        rows = [p.shape[0] - 2 * kv, kv, kv] if len(parts) == 3 else [p.shape[0] // len(parts)] * len(parts)
        out += [(f"{prefix}.{part}.{kind}", (n, *p.shape[1:])) for part, n in zip(parts, rows)]
    return out


def make_tiny_model(path: Path, arch: str = "llama", tokenizer_dir: Path | None = None, seed: int = 0, **overrides) -> Path:
    """Write a tiny random model folder of ARCH at PATH (config overrides as keyword arguments)."""
    import torch
    from safetensors.torch import save_file

    from chatcli.engine.config import ModelConfig
    from chatcli.engine.models import get_model_class

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is not None:
        shutil.copy(tokenizer_dir / "tokenizer.json", path / "tokenizer.json")
        n_vocab = json.loads((tokenizer_dir / "vocab_size").read_text())
    else:
        n_vocab = train_tokenizer(path)
    from tokenizers import Tokenizer

    ids = {s: Tokenizer.from_file(str(path / "tokenizer.json")).token_to_id(s) for s in SPECIALS}
    config = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=(n_vocab + 63) // 64 * 64, max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=False, hidden_act="silu", bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        torch_dtype="float32",
    )
    config.update(ARCHS[arch])
    config.update(overrides)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML,
        "add_bos_token": False, "model_max_length": config["max_position_embeddings"],
        "added_tokens_decoder": {str(i): {"content": s, "special": True} for s, i in ids.items()},
    }, indent=2))
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}))

    torch.manual_seed(seed)
    model = get_model_class(config["model_type"])(ModelConfig.from_dict(config))
    state = {}
    for name, shape in checkpoint_shapes(model):
        if name.endswith("norm.weight"):
            state[name] = 1.0 + 0.1 * torch.randn(shape)
        elif name.endswith("embed_tokens.weight"):
            state[name] = torch.randn(shape)
        else:  # large enough weights that greedy choices are far from ties
            state[name] = torch.randn(shape) * (0.5 / shape[-1] ** 0.5 if len(shape) == 2 else 0.1)
    if config["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A trained byte-level BPE tokenizer, shared by the tiny models of one test run."""
    folder = tmp_path_factory.mktemp("tok")
    (folder / "vocab_size").write_text(json.dumps(train_tokenizer(folder)))
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny random Llama with a ChatML template (read-only: copy it before changing files)."""
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama", tokenizer_dir=tiny_tokenizer_dir)


@pytest.fixture
def tiny_model_factory(tmp_path, tiny_tokenizer_dir):
    """make(arch="llama", **config_overrides) -> a fresh tiny model folder under tmp_path."""
    counter = iter(range(1000))

    def make(arch: str = "llama", **overrides) -> Path:
        return make_tiny_model(tmp_path / f"{arch}-{next(counter)}", arch, tokenizer_dir=tiny_tokenizer_dir, **overrides)

    return make


# Qwen3's chat template as released in the Qwen/Qwen3-* tokenizer_config.json files on Hugging Face (for example
# huggingface.co/Qwen/Qwen3-8B, tokenizer_config.json "chat_template"); the text was taken from a public GitHub copy
# of the Qwen3-4B-Base template (a find_different_chat_templates.py that compares fine-tunes against it). A data
# fixture, kept byte for byte: no comment inside it, since that would change what is tested.
QWEN3_TEMPLATE = Path(__file__).parent / "data" / "qwen3_chat_template.jinja"
QWEN3_ADDED = {151665: "<tool_response>", 151666: "</tool_response>", 151667: "<think>", 151668: "</think>"}


def make_tiny_qwen3(path: Path, qwen25_dir: Path, seed: int = 0) -> Path:
    """A tiny random qwen2-architecture model with Qwen3's real tokenizer and chat template: Qwen3's tokenizer is
    Qwen2.5's (QWEN25_DIR) plus four added tokens, which are not special (so decoding keeps <think>, as in Qwen3)."""
    from tokenizers import Tokenizer

    path = Path(path)
    tok_dir = path.parent / f"{path.name}-tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    # The ids are explicit in tokenizer.json's added_tokens (the library would number new ones after its own count).
    spec = json.loads((qwen25_dir / "tokenizer.json").read_text(encoding="utf-8"))
    # The store's copy (converted from a GGUF) pads the vocabulary with [PADn] tokens; Qwen3's has none there.
    added_ids = {a["id"] for a in spec["added_tokens"]}
    spec["model"]["vocab"] = {t: i for t, i in spec["model"]["vocab"].items() if i not in added_ids and i < min(added_ids)}
    spec["added_tokens"] += [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": False} for i, t in QWEN3_ADDED.items()]
    (tok_dir / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    assert {tok.token_to_id(t): t for t in QWEN3_ADDED.values()} == QWEN3_ADDED
    (tok_dir / "vocab_size").write_text(json.dumps(max(QWEN3_ADDED) + 1))
    make_tiny_model(path, "qwen2", tokenizer_dir=tok_dir, seed=seed, max_position_embeddings=1024)
    base = json.loads((qwen25_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    decoder = dict(base["added_tokens_decoder"])
    for i, t in QWEN3_ADDED.items():
        decoder[str(i)] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                           "special": False}
    base.update(added_tokens_decoder=decoder, chat_template=QWEN3_TEMPLATE.read_text(encoding="utf-8"),
                bos_token=None, model_max_length=1024)
    (path / "tokenizer_config.json").write_text(json.dumps(base, indent=2))
    return path


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory, qwen_dir) -> Path:
    """A tiny random Qwen3-like model: real Qwen3 tokenizer and chat template, random weights (read-only)."""
    return make_tiny_qwen3(tmp_path_factory.mktemp("models") / "tiny-qwen3", qwen_dir)
