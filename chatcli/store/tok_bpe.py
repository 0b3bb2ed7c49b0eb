"""A byte-level BPE tokenizer.json from a GGUF `gpt2` vocabulary (SmolLM2, Qwen, Llama 3 ...).

The vocabulary and merges are in the file; the pre-tokenizer is not, only its llama.cpp name (tokenizer.ggml.pre),
so each name maps to the split rule llama.cpp applies for it.
"""

from __future__ import annotations

from functools import lru_cache

from chatcli.store.gguf_file import GGUFError, GGUFFile

# GGUF token types (llama.cpp's llama_token_type, the same numbers as sentencepiece's piece types)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The three split rules in use, written out from the tokenizers they come from.
GPT2_WORDS = None  # ByteLevel's own built-in GPT-2 regex
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> (rule, whether whole words found in the vocabulary skip the merges)
PRE_TOKENIZERS = {
    **{k: ("gpt2", False) for k in ("default", "gpt2", "gpt-2", "mpt", "olmo", "jais")},
    # These isolate every digit first, then apply GPT-2's words (HF: Digits(individual) + ByteLevel).
    **{k: ("digits+gpt2", False) for k in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")},
    **{k: ("qwen2", False) for k in ("qwen2", "stablelm2", "deepseek-r1-qwen", "megrez")},
    **{k: ("llama3", True) for k in ("llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe")},
}


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (bytes that print as themselves keep their character)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers

    rule, _ = PRE_TOKENIZERS[pre]
    if rule == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    first = {
        "digits+gpt2": pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
        "qwen2": pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        "llama3": pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
    }[rule]
    return pre_tokenizers.Sequence([first, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=rule == "digits+gpt2")])


def token_types(g: GGUFFile, n: int) -> list[int]:
    """tokenizer.ggml.token_type, or all NORMAL when the file has none."""
    types = g.meta_int_list("tokenizer.ggml.token_type", -(1 << 31), (1 << 31) - 1, None)
    if types is None:
        return [NORMAL] * n
    if len(types) != n:
        raise GGUFError(f"{g.path}: tokenizer.ggml.token_type has {len(types) if isinstance(types, list) else '?'} entries for {n} tokens")
    return types


def build_bpe(g: GGUFFile, add_bos: bool) -> str:
    """tokenizer.json text for G's gpt2 vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    tokens = g.meta_str_list("tokenizer.ggml.tokens")
    if "tokenizer.ggml.merges" not in g.metadata:
        raise GGUFError(f"{g.path}: tokenizer.ggml.merges is missing; a gpt2 vocabulary needs its merges")
    merges = g.meta_str_list("tokenizer.ggml.merges")
    pre = g.meta_str("tokenizer.ggml.pre", "default")
    if not tokens:
        raise GGUFError(f"{g.path}: tokenizer.ggml.tokens is missing or empty")
    if pre not in PRE_TOKENIZERS:
        raise GGUFError(
            f"{g.path}: pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported; known: {', '.join(sorted(PRE_TOKENIZERS))}"
        )
    types = token_types(g, len(tokens))
    alphabet = byte_alphabet()
    letters = set(alphabet.values())
    vocab: dict[str, int] = {}
    for i, (tok, typ) in enumerate(zip(tokens, types)):
        if typ == NORMAL and not set(tok) <= letters:
            # A normal token stored as plain text: spell it in the byte alphabet so BPE can reach it.
            tok = "".join(alphabet[b] for b in tok.encode("utf-8"))
        if tok in vocab:
            raise GGUFError(f"{g.path}: token {tok!r} appears twice in the vocabulary (ids {vocab[tok]} and {i})")
        vocab[tok] = i
    pairs = []
    for i, m in enumerate(merges):
        parts = m.split(" ") if isinstance(m, str) else []
        if len(parts) != 2 or not all(parts):
            raise GGUFError(f"{g.path}: merge #{i} {m!r} is not two tokens separated by one space")
        # tokenizers refuses such a merge with a bare Exception; naming the token here keeps it a load error
        missing = next((t for t in (parts[0], parts[1], parts[0] + parts[1]) if t not in vocab), None)
        if missing is not None:
            raise GGUFError(f"{g.path}: merge #{i} {m!r} uses {missing!r}, which is not in the vocabulary")
        pairs.append((parts[0], parts[1]))
    _, ignore_merges = PRE_TOKENIZERS[pre]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False, ignore_merges=ignore_merges))
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    bos_id = g.meta_int("tokenizer.ggml.bos_token_id", 0, len(tokens) - 1, None)
    if add_bos and bos_id is not None:
        bos = tokens[bos_id]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # Control tokens (<|im_start|>) are matched whole and are special; user-defined ones are matched whole too.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED])
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise GGUFError(f"{g.path}: the rebuilt tokenizer has {tok.get_vocab_size(True)} tokens, the file {len(tokens)}")
    return tok.to_str(pretty=False)
