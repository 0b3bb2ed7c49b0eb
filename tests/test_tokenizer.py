"""Our tokenizer wrapper against the libraries themselves, on awkward text, and the streaming invariant."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.engine.errors import ModelLoadError
from chatcli.engine.tokenizer import StreamingDetokenizer, load_tokenizer
from tests.tinymodels import CORPUS

AWKWARD = [
    "Hello, world!",
    "emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷",
    "CJK 你好世界，日本語のテキスト、한국어",
    "combining e\u0301 a\u0308 and ñ",
    "runs    of     spaces   ",
    "\n\n\nnewlines\n \n\ttabs\t",
    "  leading spaces",
    "code: def f(x):\n    return x ** 2  # square",
    "numbers 1234567890 3.14159 -42",
]


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory):
    """A sentencepiece model trained inside the test, with byte fallback."""
    import sentencepiece as spm

    folder = tmp_path_factory.mktemp("sp")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 20 + AWKWARD[:3]), encoding="utf-8")
    spm.SentencePieceTrainer.Train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=500, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
    )
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}))
    return folder


@pytest.mark.parametrize("text", AWKWARD)
def test_sentencepiece_matches_library(sp_dir, text):
    import sentencepiece as spm

    ref = spm.SentencePieceProcessor(model_file=str(sp_dir / "tokenizer.model"))
    tok = load_tokenizer(sp_dir)
    assert tok.encode(text) == ref.EncodeAsIds(text)
    assert tok.encode(text, add_special_tokens=True) == [1, *ref.EncodeAsIds(text)]
    assert tok.decode(tok.encode(text)) == ref.DecodeIds(ref.EncodeAsIds(text))


@pytest.mark.parametrize("text", AWKWARD + ["<|im_start|>user\nhi<|im_end|>\n"])
def test_bpe_matches_library(tiny_llama_dir, text):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(tiny_llama_dir / "tokenizer.json"))
    tok = load_tokenizer(tiny_llama_dir)
    assert tok.encode(text) == ref.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == text  # byte-level BPE round-trips exactly


def test_special_tokens_and_template(tiny_llama_dir):
    tok = load_tokenizer(tiny_llama_dir)
    assert tok.encode("<|im_end|>") == [next(iter(tok.eos_token_ids))]
    assert tok.chat_template and "im_start" in tok.chat_template
    assert tok.add_bos_token is False


def test_lone_surrogates_become_replacement(tiny_llama_dir):
    tok = load_tokenizer(tiny_llama_dir)
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"


def _stream(tok, ids):
    d = StreamingDetokenizer(tok)
    return [d.add(i) for i in ids] + [d.flush()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_streamed_pieces_join_to_decode_bpe(tiny_llama_dir, data):
    tok = load_tokenizer(tiny_llama_dir)
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
    assert "".join(_stream(tok, ids)) == tok.decode(ids)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_streamed_pieces_join_to_decode_sentencepiece(sp_dir, data):
    tok = load_tokenizer(sp_dir)
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
    assert "".join(_stream(tok, ids)) == tok.decode(ids)


def test_multibyte_character_is_held_until_whole(tiny_llama_dir):
    tok = load_tokenizer(tiny_llama_dir)
    # Byte-level tokens of the single bytes of "中" (e4 b8 ad): the first two must yield nothing.
    byte_ids = [tok._hf.token_to_id(_byte_char(b)) for b in "中".encode()]
    assert None not in byte_ids
    d = StreamingDetokenizer(tok)
    assert d.add(byte_ids[0]) == "" and d.add(byte_ids[1]) == ""
    assert d.add(byte_ids[2]) == "中"


def _byte_char(b: int) -> str:
    """GPT-2's byte-to-unicode map for one byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    if b in printable:
        return chr(b)
    return chr(256 + sorted(set(range(256)) - set(printable)).index(b))


def test_missing_or_corrupt_tokenizer(tmp_path, tiny_llama_dir):
    with pytest.raises(ModelLoadError, match="no tokenizer.json or tokenizer.model"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="tokenizer.json: cannot be loaded"):
        load_tokenizer(tmp_path)


def test_vocabulary_larger_than_embedding(tiny_llama_dir):
    with pytest.raises(ModelLoadError, match="embedding only 10"):
        load_tokenizer(tiny_llama_dir, vocab_limit=10)
