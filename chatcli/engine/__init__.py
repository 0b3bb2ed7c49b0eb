"""A small, readable transformer engine in PyTorch. It imports nothing from the rest of chatcli."""
