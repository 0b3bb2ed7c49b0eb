"""One interface over tokenizer.json (the `tokenizers` library) and tokenizer.model (sentencepiece)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chatcli.engine.errors import ModelLoadError


def _token_text(value) -> str | None:
    """tokenizer_config.json writes special tokens as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_json_object(path: Path) -> dict:
    """PATH parsed as a JSON object; {} when the file is absent, a load error when it is not JSON or not an object."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):  # a list here once dropped the chat template without a word
        raise ModelLoadError(f"{path}: expected a JSON object, found {type(data).__name__}; re-convert or re-download the model")
    return data


def check_tokenizer_config(cfg: dict, path: Path) -> None:
    """The keys of tokenizer_config.json whose wrong type would otherwise be dropped silently or break later."""
    for key, kind in (("added_tokens_decoder", dict), ("chat_template", (str, list))):
        if cfg.get(key) is not None and not isinstance(cfg[key], kind):
            raise ModelLoadError(f"{path}: key {key!r} has the wrong type ({type(cfg[key]).__name__})")


def clean_text(text: str) -> str:
    """Replace lone surrogates (which UTF-8 cannot carry) with U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Tokenizer:
    """Text <-> token ids, plus the special tokens and chat template of the model folder."""

    def __init__(self, folder: str | Path, vocab_limit: int | None = None):
        folder = Path(folder)
        self.folder = folder
        cfg = read_json_object(folder / "tokenizer_config.json")
        gen = read_json_object(folder / "generation_config.json")
        model_cfg = read_json_object(folder / "config.json")
        self._sp = self._hf = None
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as HFTokenizer

            try:
                self._hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as e:  # the Rust error types are not exported; any failure means a corrupt file
                raise ModelLoadError(f"{folder / 'tokenizer.json'}: cannot be loaded ({e}); re-convert or re-download it") from None
            self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
        elif (folder / "tokenizer.model").is_file():
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor()
            try:
                self._sp.Load(str(folder / "tokenizer.model"))
            except Exception as e:  # sentencepiece raises OSError or RuntimeError by version
                raise ModelLoadError(f"{folder / 'tokenizer.model'}: cannot be loaded ({e}); re-convert or re-download it") from None
            self.vocab_size = self._sp.GetPieceSize()
        else:
            raise ModelLoadError(f"{folder}: no tokenizer.json or tokenizer.model; the model folder needs a tokenizer")

        self.bos_token = _token_text(cfg.get("bos_token"))
        self.eos_token = _token_text(cfg.get("eos_token"))
        self.bos_token_id = self._id_of(self.bos_token, gen.get("bos_token_id", model_cfg.get("bos_token_id")))
        eos = gen.get("eos_token_id", model_cfg.get("eos_token_id"))
        eos_ids = set(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
        eos_from_text = self._id_of(self.eos_token, None)
        if eos_from_text is not None:
            eos_ids.add(eos_from_text)
        self.eos_token_ids: set[int] = eos_ids
        if self.eos_token is None and eos_ids:
            self.eos_token = self.id_to_piece(min(eos_ids))
        if self.bos_token is None and self.bos_token_id is not None:
            self.bos_token = self.id_to_piece(self.bos_token_id)
        default_bos = self._sp is not None  # sentencepiece models (Llama 2, Gemma) add BOS unless told otherwise
        self.add_bos_token = bool(cfg.get("add_bos_token", default_bos)) and self.bos_token_id is not None
        check_tokenizer_config(cfg, folder / "tokenizer_config.json")
        self.chat_template = self._chat_template(folder, cfg)
        # Control tokens are split out before sentencepiece sees the text, as transformers does.
        self._specials = self._special_tokens(cfg)
        self._special_re = (
            re.compile("(" + "|".join(re.escape(s) for s in sorted(self._specials, key=len, reverse=True)) + ")")
            if self._specials and self._sp is not None
            else None
        )
        limit = vocab_limit
        for name, i in (("bos_token_id", self.bos_token_id), *(("eos_token_id", e) for e in eos_ids)):
            if i is not None and not 0 <= i < max(self.vocab_size, limit or 0):
                raise ModelLoadError(f"{folder}: {name} {i} is outside the vocabulary (size {self.vocab_size})")
        if limit is not None and self.vocab_size > limit:
            raise ModelLoadError(
                f"{folder}: the tokenizer has {self.vocab_size} tokens but the embedding only {limit}; tokenizer and weights do not belong together"
            )

    def _id_of(self, text: str | None, fallback) -> int | None:
        if text is not None:
            i = self._hf.token_to_id(text) if self._hf else self._sp.PieceToId(text)
            if i is not None and (self._hf or self._sp.IdToPiece(i) == text):
                return i
        return fallback if isinstance(fallback, int) else None

    @staticmethod
    def _chat_template(folder: Path, cfg: dict) -> str | None:
        jinja = folder / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8", errors="replace")
        t = cfg.get("chat_template")
        if isinstance(t, list):  # named templates: use "default"
            t = next((x.get("template") for x in t if isinstance(x, dict) and x.get("name") == "default"), None)
        return t if isinstance(t, str) else None

    def _special_tokens(self, cfg: dict) -> set[str]:
        found = {t for t in (self.bos_token, self.eos_token) if t}
        for entry in (cfg.get("added_tokens_decoder") or {}).values():
            if isinstance(entry, dict) and entry.get("special") and isinstance(entry.get("content"), str):
                found.add(entry["content"])
        return found

    def added_tokens(self) -> list[str]:
        """The texts of the tokens added on top of the learned vocabulary (control tokens, markers such as <think>)."""
        if self._hf is not None:
            return [t.content for t in self._hf.get_added_tokens_decoder().values()]
        return sorted(self._specials)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of TEXT; with add_special_tokens, BOS is prepended when the tokenizer config asks for it."""
        text = clean_text(text)
        if self._hf is not None:
            ids = self._hf.encode(text, add_special_tokens=add_special_tokens).ids
        else:
            ids = []
            parts = self._special_re.split(text) if self._special_re else [text]
            for part in parts:
                if not part:
                    continue
                if part in self._specials:
                    ids.append(self._sp.PieceToId(part))
                else:
                    ids.extend(self._sp.EncodeAsIds(part))
        if add_special_tokens and self.add_bos_token and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of IDS, special tokens included."""
        ids = [int(i) for i in ids]
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=False)
        return self._sp.DecodeIds(ids)

    def id_to_piece(self, i: int) -> str:
        """The vocabulary entry of one id, as stored (e.g. 'Ġthe' or '▁the')."""
        return (self._hf.id_to_token(i) if self._hf else self._sp.IdToPiece(i)) or ""


class StreamingDetokenizer:
    """Turns tokens into text as they arrive, holding back bytes until a UTF-8 character is whole.

    Invariant: the pieces returned by add() and flush() join to tokenizer.decode(all tokens).
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.emitted = ""

    def add(self, token_id: int) -> str:
        """Add one token; return the new whole characters (maybe '')."""
        self.tokens.append(token_id)
        # Decoding the whole sequence keeps sentencepiece's leading-space rule and byte merges right; it is cheap
        # next to a forward pass. A trailing U+FFFD means an incomplete character: wait for more bytes.
        text = self.tokenizer.decode(self.tokens)
        if text.endswith("\ufffd") or not text.startswith(self.emitted):
            return ""
        new, self.emitted = text[len(self.emitted):], text
        return new

    def flush(self) -> str:
        """Whatever is left (an incomplete character decodes to U+FFFD)."""
        text = self.tokenizer.decode(self.tokens)
        new = text[len(self.emitted):] if text.startswith(self.emitted) else ""
        self.emitted = text
        return new


def load_tokenizer(path: str | Path, vocab_limit: int | None = None) -> Tokenizer:
    """The tokenizer of a model folder; vocab_limit (the embedding rows) is checked when given."""
    return Tokenizer(path, vocab_limit)
