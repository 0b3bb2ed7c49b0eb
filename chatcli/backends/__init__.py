"""Backends: one protocol (base.py), implementations found through the `chatcli.backends` entry points."""
