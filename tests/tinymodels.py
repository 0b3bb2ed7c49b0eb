"""Tiny random models written in the test: a real config.json plus safetensors, and a real tokenizer."""
