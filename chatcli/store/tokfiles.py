"""The tokenizer side of a converted folder: tokenizer.json or tokenizer.model, tokenizer_config.json, the stop tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatcli.store.gguf_file import GGUFError, GGUFFile
from chatcli.store.tok_bpe import CONTROL, USER_DEFINED, build_bpe, token_types
from chatcli.store.tok_spm import build_spm

# Tokens that end a turn in the common chat formats; llama.cpp treats these as end-of-generation as well.
END_OF_GENERATION = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|end|>", "<end_of_turn>")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def stop_ids(g: GGUFFile) -> list[int]:
    """EOS first, then EOT/EOM and the control tokens that end a turn (generation_config's eos_token_id list)."""
    tokens = g.meta_str_list("tokenizer.ggml.tokens", None) or []
    types = token_types(g, len(tokens))
    ids: list[int] = []
    for key in ("eos_token_id", "eot_token_id", "eom_token_id"):
        value = g.meta_int(f"tokenizer.ggml.{key}", 0, max(len(tokens) - 1, 0), None)
        if value is not None and value not in ids:
            ids.append(value)
    for i, (tok, typ) in enumerate(zip(tokens, types)):
        if typ == CONTROL and tok in END_OF_GENERATION and i not in ids:
            ids.append(i)
    return ids


def write_tokenizer(g: GGUFFile, out: Path, context_length: int) -> dict[str, Any]:
    """Write the tokenizer files into OUT; return {'kind', 'chat_template', 'eos_ids'} for the caller."""
    kind = g.meta_str("tokenizer.ggml.model", None)
    if "tokenizer.ggml.tokens" not in g.metadata:
        raise GGUFError(f"{g.path}: no tokenizer.ggml.tokens; the GGUF carries no vocabulary to convert")
    tokens = g.meta_str_list("tokenizer.ggml.tokens")
    if kind == "gpt2":
        add_bos = g.meta_bool("tokenizer.ggml.add_bos_token", False)
        (out / "tokenizer.json").write_text(build_bpe(g, add_bos), encoding="utf-8")
        tokenizer_class = "PreTrainedTokenizerFast"
    elif kind == "llama":
        add_bos = g.meta_bool("tokenizer.ggml.add_bos_token", True)
        (out / "tokenizer.model").write_bytes(build_spm(g))
        arch = g.meta_str("general.architecture", "")
        tokenizer_class = "GemmaTokenizer" if arch.startswith("gemma") else "LlamaTokenizer"
    else:
        raise GGUFError(f"{g.path}: tokenizer model {kind!r} (tokenizer.ggml.model) is not supported; gpt2 and llama are")
    types = token_types(g, len(tokens))

    def text_of(key: str) -> str | None:
        value = g.meta_int(f"tokenizer.ggml.{key}", 0, len(tokens) - 1, None) if tokens else None
        return None if value is None else tokens[value]

    decoder = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": ty == CONTROL}
        for i, (t, ty) in enumerate(zip(tokens, types))
        # sentencepiece matches its own user-defined pieces; listing them here would only duplicate that
        if ty == CONTROL or (ty == USER_DEFINED and kind == "gpt2")
    }
    template = g.meta_str("tokenizer.chat_template", None)
    config = {
        "tokenizer_class": tokenizer_class,
        "add_bos_token": add_bos,
        "add_eos_token": g.meta_bool("tokenizer.ggml.add_eos_token", False),
        "bos_token": text_of("bos_token_id"),
        "eos_token": text_of("eos_token_id"),
        "unk_token": text_of("unknown_token_id"),
        "pad_token": text_of("padding_token_id"),
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": decoder,
    }
    if kind == "llama":
        config["add_prefix_space"] = g.meta_bool("tokenizer.ggml.add_space_prefix", True)
        config["legacy"] = False
    if isinstance(template, str) and template.strip():
        config["chat_template"] = template
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if config[k]})
    return {"kind": kind, "chat_template": isinstance(template, str) and bool(template.strip()), "eos_ids": stop_ids(g)}
