"""A sentencepiece tokenizer.model from a GGUF `llama` vocabulary (Gemma, Llama 2, Mistral v0.1 ...).

The file is a ModelProto built with sentencepiece's own protobuf module: pieces with their scores and types, byte
fallback when the vocabulary has byte pieces, and the dummy-prefix rule the GGUF states (add_space_prefix).
"""

from __future__ import annotations

from chatcli.store.gguf_file import GGUFError, GGUFFile
from chatcli.store.tok_bpe import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, token_types

SPACE = "\u2581"  # sentencepiece's visible space


def build_spm(g: GGUFFile) -> bytes:
    """Serialized tokenizer.model for G's llama (sentencepiece) vocabulary."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens = g.meta_str_list("tokenizer.ggml.tokens")
    if not tokens:
        raise GGUFError(f"{g.path}: tokenizer.ggml.tokens is missing or empty")
    n = len(tokens)
    scores = g.meta_float_list("tokenizer.ggml.scores", None) or [0.0] * n
    if len(scores) != n:
        raise GGUFError(f"{g.path}: tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")
    types = token_types(g, n)

    def special(key: str) -> int:
        value = g.meta_int(f"tokenizer.ggml.{key}", 0, n - 1, None)
        return -1 if value is None else value

    unk, bos, eos, pad = (special(k) for k in ("unknown_token_id", "bos_token_id", "eos_token_id", "padding_token_id"))
    if unk < 0:
        unk = next((i for i, t in enumerate(types) if t == UNKNOWN), -1)
    if unk < 0:
        raise GGUFError(f"{g.path}: the sentencepiece vocabulary names no unknown token (tokenizer.ggml.unknown_token_id)")

    m = pb.ModelProto()
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = n
    ts.byte_fallback = BYTE in types
    ts.allow_whitespace_only_pieces = True
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = unk, bos, eos, pad
    for field, idx in (("unk_piece", unk), ("bos_piece", bos), ("eos_piece", eos), ("pad_piece", pad)):
        if idx >= 0:
            setattr(ts, field, tokens[idx])
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = g.meta_bool("tokenizer.ggml.add_space_prefix", True)
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True

    kinds = {NORMAL: pb.ModelProto.SentencePiece.NORMAL, UNKNOWN: pb.ModelProto.SentencePiece.UNKNOWN,
             CONTROL: pb.ModelProto.SentencePiece.CONTROL, USER_DEFINED: pb.ModelProto.SentencePiece.USER_DEFINED,
             UNUSED: pb.ModelProto.SentencePiece.UNUSED, BYTE: pb.ModelProto.SentencePiece.BYTE}
    seen: set[str] = set()
    for i, (tok, score, typ) in enumerate(zip(tokens, scores, types)):
        if i == unk:
            typ = UNKNOWN  # sentencepiece needs exactly one UNKNOWN piece; GGUF often marks <unk> as control
        elif typ == UNKNOWN:
            typ = CONTROL
        if typ == USER_DEFINED:
            # llama.cpp stores user-defined pieces with real spaces ("  "); sentencepiece matches them after
            # escaping spaces, so they go back to the visible-space spelling.
            tok = tok.replace(" ", SPACE)
        if typ not in kinds:
            raise GGUFError(f"{g.path}: token {i} {tok!r} has unknown token type {typ}")
        if not tok or tok in seen:
            raise GGUFError(f"{g.path}: token {i} {tok!r} is empty or appears twice in the vocabulary")
        seen.add(tok)
        piece = m.pieces.add()
        piece.piece, piece.score, piece.type = tok, float(score), kinds[typ]
    data = m.SerializeToString()
    _check_loads(g, data)
    return data


def _check_loads(g: GGUFFile, data: bytes) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(data)
    except Exception as e:  # sentencepiece raises RuntimeError or OSError by version
        raise GGUFError(f"{g.path}: the vocabulary does not make a valid sentencepiece model ({e})") from None
