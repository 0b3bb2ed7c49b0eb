"""Small real GGUF files and wheels for the store tests, written with gguf.GGUFWriter and zipfile (no network).

make_gguf() writes a tiny llama/qwen2/gemma3 model with a gpt2 (byte-level BPE) or llama (sentencepiece) vocabulary,
llama.cpp's layout included (q/k rows permuted for llama, +1 folded into Gemma norms), and returns the HF-layout
weights it started from so tests can check the round trip exactly.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path

import numpy as np

from chatcli.store.tok_bpe import byte_alphabet

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "l l", "o r"]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2


def gpt2_vocab() -> tuple[list[str], list[int], list[str]]:
    """Specials, the 256 byte characters, then one token per merge."""
    tokens = SPECIALS + [byte_alphabet()[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, types, MERGES


def spm_vocab() -> tuple[list[str], list[int], list[float]]:
    """A Gemma-like sentencepiece vocabulary: controls, byte pieces, a user-defined double space, merged pieces."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    types = [3] * 6
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    tokens.append("  ")  # llama.cpp stores user-defined space runs with real spaces
    types.append(4)
    pieces = ["▁", "t", "h", "e", "o", "r", "l", "a", "c", "n", "th", "he", "the", "▁the", "▁c", "at", "▁cat"]
    tokens += pieces
    types += [1] * len(pieces)
    scores = [0.0] * (len(tokens) - len(pieces)) + [-float(i) for i in range(len(pieces))]
    return tokens, types, scores


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (convert_hf_to_gguf's LlamaModel.permute), written out for the round trip."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_gguf(
    path: Path,
    arch: str = "llama",
    qtype: str = "F32",
    tied: bool = True,
    seed: int = 0,
    extra_kv: dict | None = None,
    extra_tensors: dict | None = None,
    tensor_types: dict | None = None,
    vocab: str | None = None,
) -> dict[str, np.ndarray]:
    """Write a tiny GGUF at PATH; return {hf_name: float32 weights} as a Hugging Face checkpoint would hold them."""
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    vocab = vocab or ("llama" if arch == "gemma3" else "gpt2")
    if vocab == "gpt2":
        tokens, types, merges = gpt2_vocab()
    else:
        tokens, types, scores = spm_vocab()
    n_vocab = len(tokens)
    head_dim = HIDDEN // HEADS
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_string("general.license", "apache-2.0")
    if arch == "gemma3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_uint32("gemma3.attention.sliding_window", 32)
    w.add_tokenizer_model(vocab)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if vocab == "gpt2":
        w.add_tokenizer_pre("default")
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_pad_token_id(0)
        w.add_chat_template(CHATML)
    else:
        w.add_token_scores(scores)
        w.add_bos_token_id(2)
        w.add_eos_token_id(1)
        w.add_unk_token_id(3)
        w.add_pad_token_id(0)
        w.add_add_space_prefix(False)
        w.add_add_bos_token(True)
    for key, value in (extra_kv or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_uint32(key, value)

    hf: dict[str, np.ndarray] = {}
    gg: dict[str, np.ndarray] = {}

    def put(gguf_name: str, hf_name: str, shape, stored=None, norm=False):
        value = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if norm:
            value = (1.0 + value * 0.1).astype(np.float32) if arch != "gemma3" else (value * 0.1).astype(np.float32)
        hf[hf_name] = value
        gg[gguf_name] = stored(value) if stored else value

    put("token_embd.weight", "model.embed_tokens.weight", (n_vocab, HIDDEN))
    plus_one = (lambda v: v + np.float32(1.0)) if arch == "gemma3" else None
    put("output_norm.weight", "model.norm.weight", (HIDDEN,), plus_one, norm=True)
    if not tied:
        put("output.weight", "lm_head.weight", (n_vocab, HIDDEN))
    for i in range(LAYERS):
        b, p = f"blk.{i}.", f"model.layers.{i}."
        q_fix = (lambda v: permute(v, HEADS)) if arch == "llama" else None
        k_fix = (lambda v: permute(v, KV_HEADS)) if arch == "llama" else None
        put(b + "attn_q.weight", p + "self_attn.q_proj.weight", (HEADS * head_dim, HIDDEN), q_fix)
        put(b + "attn_k.weight", p + "self_attn.k_proj.weight", (KV_HEADS * head_dim, HIDDEN), k_fix)
        put(b + "attn_v.weight", p + "self_attn.v_proj.weight", (KV_HEADS * head_dim, HIDDEN))
        put(b + "attn_output.weight", p + "self_attn.o_proj.weight", (HIDDEN, HEADS * head_dim))
        put(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", (FFN, HIDDEN))
        put(b + "ffn_up.weight", p + "mlp.up_proj.weight", (FFN, HIDDEN))
        put(b + "ffn_down.weight", p + "mlp.down_proj.weight", (HIDDEN, FFN))
        put(b + "attn_norm.weight", p + "input_layernorm.weight", (HIDDEN,), plus_one, norm=True)
        if arch == "qwen2":
            put(b + "attn_q.bias", p + "self_attn.q_proj.bias", (HEADS * head_dim,))
            put(b + "attn_k.bias", p + "self_attn.k_proj.bias", (KV_HEADS * head_dim,))
            put(b + "attn_v.bias", p + "self_attn.v_proj.bias", (KV_HEADS * head_dim,))
        if arch == "gemma3":
            put(b + "ffn_norm.weight", p + "pre_feedforward_layernorm.weight", (HIDDEN,), plus_one, norm=True)
            put(b + "post_attention_norm.weight", p + "post_attention_layernorm.weight", (HIDDEN,), plus_one, norm=True)
            put(b + "post_ffw_norm.weight", p + "post_feedforward_layernorm.weight", (HIDDEN,), plus_one, norm=True)
            put(b + "attn_q_norm.weight", p + "self_attn.q_norm.weight", (head_dim,), plus_one, norm=True)
            put(b + "attn_k_norm.weight", p + "self_attn.k_norm.weight", (head_dim,), plus_one, norm=True)
        else:
            put(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", (HIDDEN,), norm=True)
    gg.update(extra_tensors or {})
    for name, value in gg.items():
        kind = (tensor_types or {}).get(name, qtype if value.ndim == 2 else "F32")
        qt = gguf.GGMLQuantizationType[kind]
        if kind == "F32":
            w.add_tensor(name, value.astype(np.float32))
        elif kind == "F16":
            w.add_tensor(name, value.astype(np.float16))
        elif isinstance(value, np.ndarray) and value.dtype == np.uint8:
            w.add_tensor(name, value, raw_dtype=qt)
        else:
            w.add_tensor(name, quantize(value, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


# ---- byte surgery for the corrupt-file tests -------------------------------------------------------------------

def kv_value_pos(data: bytes, key: str) -> int:
    """Offset of the value-type field that follows metadata KEY."""
    raw = key.encode()
    at = data.index(struct.pack("<Q", len(raw)) + raw)
    return at + 8 + len(raw)


def tensor_offset_pos(data: bytes, name: str) -> int:
    """Offset of the uint64 data offset in tensor NAME's header entry."""
    raw = name.encode()
    at = data.index(struct.pack("<Q", len(raw)) + raw) + 8 + len(raw)
    (n_dims,) = struct.unpack_from("<I", data, at)
    return at + 4 + 8 * n_dims + 4


def patch(path: Path, pos: int, fmt: str, value) -> None:
    """Overwrite one value in PATH (little-endian unless FMT says otherwise)."""
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt if fmt[0] in "<>" else "<" + fmt, data, pos, value)
    path.write_bytes(bytes(data))


# ---- wheels ------------------------------------------------------------------------------------------------------

def make_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal wheel that pip download accepts from a --find-links folder."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = package.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def sha256(data: bytes) -> str:
    """Hex sha256 of DATA."""
    return hashlib.sha256(data).hexdigest()
