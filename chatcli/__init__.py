"""chatcli: a terminal chatbot with its own readable PyTorch transformer engine."""

__version__ = "0.1.0"
