"""The model store: resolve names to model folders, pull from PyPI wheels, import GGUF files and HF folders."""
